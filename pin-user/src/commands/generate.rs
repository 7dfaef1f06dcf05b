//! `pinwatch generate man|completions DIR` (hidden): the man pages and
//! shell completions the release artifacts ship, made from the command
//! line's own definition (clap_mangen, clap_complete) so that they cannot
//! drift from it. `cargo xtask dist` runs it, as ripgrep's release does
//! with `rg --generate`.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::ValueEnum;
use clap_complete::Shell;

/// Options of `generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// What to write.
    #[arg(value_enum)]
    pub what: Generated,
    /// The directory to write into (created if missing).
    pub dir: PathBuf,
}

/// What `generate` writes.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Generated {
    /// pinwatch.1 and pinwatch-COMMAND.1 for each command.
    Man,
    /// pinwatch.bash, _pinwatch (zsh) and pinwatch.fish.
    Completions,
}

/// Writes the files for `cli` (the whole command line, which the caller
/// builds from its parser); prints each path written.
pub fn run(args: GenerateArgs, cli: clap::Command) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let written = match args.what {
        Generated::Man => man_pages(cli, &args.dir)?,
        Generated::Completions => completions(cli, &args.dir)?,
    };
    for path in written {
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// One page for pinwatch, one per visible command.
pub fn man_pages(mut cli: clap::Command, dir: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    cli.build();
    let mut pages = vec![("pinwatch".to_string(), cli.clone())];
    // Not clap's own `help` command: `pinwatch help X` is `man pinwatch-X`.
    for command in cli
        .get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
    {
        let name = format!("pinwatch-{}", command.get_name());
        let page = command
            .clone()
            .name(name.clone())
            .bin_name(format!("pinwatch {}", command.get_name()))
            .version(crate::build_info::VERSION);
        pages.push((name, page));
    }
    let mut written = Vec::new();
    for (name, command) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        clap_mangen::Man::new(command)
            .render(&mut file)
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Completions for bash, zsh and fish.
pub fn completions(mut cli: clap::Command, dir: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    [Shell::Bash, Shell::Zsh, Shell::Fish]
        .into_iter()
        .map(|shell| {
            clap_complete::generate_to(shell, &mut cli, "pinwatch", dir)
                .with_context(|| format!("writing the {shell} completions"))
        })
        .collect()
}
