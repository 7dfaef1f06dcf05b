//! The Grafana dashboard: `deploy/grafana/pinwatch.json` is generated from
//! `deploy/grafana/pinwatch.dashboard.py` with grafanalib (pinned, in a
//! virtualenv under target/tools). `cargo xtask dashboard` writes it;
//! `cargo xtask test` checks that the committed file is what the source
//! generates.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::{cmd, workspace};

/// The grafanalib release the dashboard is generated with.
const GRAFANALIB_VERSION: &str = "0.7.1";

fn source_dir() -> PathBuf {
    workspace::root().join("deploy/grafana")
}

/// The committed dashboard.
pub fn committed() -> PathBuf {
    source_dir().join("pinwatch.json")
}

/// A virtualenv with grafanalib, made once (idempotent: kept when it
/// already has the pinned release); its directory.
pub fn ensure_grafanalib() -> anyhow::Result<PathBuf> {
    crate::install::ensure_python_tool("grafanalib", &format!("grafanalib=={GRAFANALIB_VERSION}"))
}

/// Generates the dashboard's JSON from its source.
fn generate() -> anyhow::Result<String> {
    let venv = ensure_grafanalib()?;
    let out = tempfile_path();
    cmd::run(
        Command::new(venv.join("bin/generate-dashboard"))
            .arg("-o")
            .arg(&out)
            .arg("pinwatch.dashboard.py")
            .current_dir(source_dir()),
    )?;
    let text =
        std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
    let _ = std::fs::remove_file(&out);
    Ok(text)
}

fn tempfile_path() -> PathBuf {
    workspace::root().join(format!(
        "target/tools/pinwatch-dashboard-{}.json",
        std::process::id()
    ))
}

/// `cargo xtask dashboard`: writes deploy/grafana/pinwatch.json.
pub fn write() -> anyhow::Result<std::process::ExitCode> {
    let text = generate()?;
    std::fs::write(committed(), text)?;
    println!("wrote {}", committed().display());
    Ok(std::process::ExitCode::SUCCESS)
}

/// Fails unless the committed dashboard is what its source generates.
pub fn check() -> anyhow::Result<()> {
    let generated = generate()?;
    let committed = std::fs::read_to_string(committed())
        .with_context(|| format!("reading {}", committed().display()))?;
    if generated != committed {
        bail!(
            "{} is not what {} generates: run `cargo xtask dashboard` and commit it",
            self::committed().display(),
            source_dir().join("pinwatch.dashboard.py").display()
        );
    }
    Ok(())
}
