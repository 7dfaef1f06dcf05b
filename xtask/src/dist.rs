//! `cargo xtask dist`: the release artifacts, in target/dist/:
//! - `pinwatch-VERSION-x86_64-linux-musl`: the static binary alone (eBPF
//!   objects embedded; runs on any x86_64 Linux, no shared library);
//! - `pinwatch-VERSION-x86_64-linux-musl.tar.gz`: it with the man pages,
//!   shell completions, the systemd unit, the Prometheus rules and the
//!   Grafana dashboard, laid out as under /usr;
//! - `pinwatch_VERSION_amd64.deb` (dpkg-deb): the same under /usr;
//! - `SHA256SUMS` of the three.
//!
//! Before it returns, it checks what it built: the binary is static (ldd)
//! and says its version, and the package installs into a scratch root with
//! its own dpkg database, runs from there and removes without leaving a
//! file behind.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, bail};

use crate::{cmd, dashboard, vm, workspace};

/// Where the artifacts go.
fn dist_dir() -> PathBuf {
    workspace::root().join("target/dist")
}

/// One file of the release: where it comes from and where it goes,
/// relative to the prefix (`usr/` in the package, the top directory in
/// the tarball).
struct Part {
    from: PathBuf,
    to: String,
    mode: u32,
}

/// `cargo xtask dist`.
pub fn run() -> anyhow::Result<ExitCode> {
    let binary = vm::build_static_pinwatch()?;
    check_static(&binary)?;
    let version = version_of(&binary)?;
    let out = dist_dir();
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
    }
    std::fs::create_dir_all(&out)?;
    let stem = format!("pinwatch-{version}-x86_64-linux-musl");
    let stripped = out.join(&stem);
    std::fs::copy(&binary, &stripped)?;
    cmd::run(Command::new("strip").arg(&stripped))?;
    let parts = parts(&stripped)?;

    let tree = out.join("tree").join(&stem);
    stage(&parts, &tree)?;
    let tarball = out.join(format!("{stem}.tar.gz"));
    cmd::run(
        Command::new("tar")
            .args([
                "--sort=name",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "-czf",
            ])
            .arg(&tarball)
            .arg("-C")
            .arg(out.join("tree"))
            .arg(&stem),
    )?;

    let deb = out.join(format!("pinwatch_{version}_amd64.deb"));
    build_deb(&parts, &version, &out.join("deb-root"), &deb)?;
    check_deb(&deb, &out.join("deb-check"))?;

    let artifacts = [&stripped, &tarball, &deb];
    let names: Vec<String> = artifacts
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let sums = cmd::output(Command::new("sha256sum").args(&names).current_dir(&out))?;
    std::fs::write(out.join("SHA256SUMS"), &sums)?;
    for path in artifacts {
        let size = std::fs::metadata(path)?.len();
        println!("{:>10} bytes  {}", size, path.display());
    }
    print!("{sums}");
    Ok(ExitCode::SUCCESS)
}

/// Fails unless `ldd` finds no shared library to load.
fn check_static(binary: &Path) -> anyhow::Result<()> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A static PIE (what Rust's musl target links, keeping ASLR) is
    // "statically linked"; a non-PIE static one "not a dynamic executable".
    if !(said.contains("statically linked") || said.contains("not a dynamic executable")) {
        bail!(
            "{} is not static; ldd says: {}",
            binary.display(),
            said.trim()
        );
    }
    println!("ldd {}: {}", binary.display(), said.trim());
    Ok(())
}

/// The package version `pinwatch -V` reports ("pinwatch 0.1.0 (git ...)").
fn version_of(binary: &Path) -> anyhow::Result<String> {
    let said = cmd::output(Command::new(binary).arg("-V"))?;
    println!("{}", said.trim());
    said.split_whitespace()
        .nth(1)
        .map(str::to_string)
        .with_context(|| format!("no version in {said:?}"))
}

/// Every file of the release. Man pages and completions come from the
/// binary itself (`pinwatch generate`).
fn parts(binary: &Path) -> anyhow::Result<Vec<Part>> {
    let root = workspace::root();
    let generated = dist_dir().join("generated");
    for what in ["man", "completions"] {
        cmd::output(
            Command::new(binary)
                .args(["generate", what])
                .arg(generated.join(what)),
        )?;
    }
    let mut parts = vec![Part {
        from: binary.to_path_buf(),
        to: "bin/pinwatch".into(),
        mode: 0o755,
    }];
    let file = |from: PathBuf, to: &str| Part {
        from,
        to: to.to_string(),
        mode: 0o644,
    };
    for page in sorted_dir(&generated.join("man"))? {
        cmd::run(Command::new("gzip").args(["-9", "-n", "-f"]).arg(&page))?;
        let name = page.file_name().unwrap().to_string_lossy().into_owned();
        let gz = page.with_file_name(format!("{name}.gz"));
        parts.push(file(gz, &format!("share/man/man1/{name}.gz")));
    }
    let completions = generated.join("completions");
    parts.extend([
        file(
            completions.join("pinwatch.bash"),
            "share/bash-completion/completions/pinwatch",
        ),
        file(
            completions.join("_pinwatch"),
            "share/zsh/vendor-completions/_pinwatch",
        ),
        file(
            completions.join("pinwatch.fish"),
            "share/fish/vendor_completions.d/pinwatch.fish",
        ),
        file(
            root.join("deploy/systemd/pinwatch.service"),
            "lib/systemd/system/pinwatch.service",
        ),
        file(
            root.join("deploy/prometheus/pinwatch-rules.yml"),
            "share/pinwatch/prometheus/pinwatch-rules.yml",
        ),
        file(
            root.join("deploy/prometheus/pinwatch-rules.test.yml"),
            "share/pinwatch/prometheus/pinwatch-rules.test.yml",
        ),
        file(
            dashboard::committed(),
            "share/pinwatch/grafana/pinwatch.json",
        ),
        file(root.join("README.md"), "share/doc/pinwatch/README.md"),
    ]);
    Ok(parts)
}

fn sorted_dir(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.retain(|p| p.extension().is_some_and(|e| e == "1"));
    paths.sort();
    Ok(paths)
}

/// Copies `parts` under `prefix` with their modes.
fn stage(parts: &[Part], prefix: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    for part in parts {
        let to = prefix.join(&part.to);
        std::fs::create_dir_all(to.parent().unwrap())?;
        std::fs::copy(&part.from, &to)
            .with_context(|| format!("copying {} to {}", part.from.display(), to.display()))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(part.mode))?;
    }
    Ok(())
}

/// A binary package of `parts` under /usr, built with dpkg-deb. No
/// maintainer scripts: the service is installed, not enabled (`systemctl
/// enable --now pinwatch`).
fn build_deb(parts: &[Part], version: &str, root: &Path, deb: &Path) -> anyhow::Result<()> {
    stage(parts, &root.join("usr"))?;
    let installed_kib: u64 = parts
        .iter()
        .map(|p| std::fs::metadata(&p.from).map(|m| m.len().div_ceil(1024)))
        .sum::<Result<u64, _>>()?;
    std::fs::create_dir_all(root.join("DEBIAN"))?;
    let control = format!(
        "Package: pinwatch\n\
         Version: {version}\n\
         Architecture: amd64\n\
         Maintainer: pinwatch developers <pinwatch@localhost>\n\
         Installed-Size: {installed_kib}\n\
         Section: admin\n\
         Priority: optional\n\
         Description: eBPF observability for Linux page pinning\n \
         pinwatch traces the get_user_pages / pin_user_pages family and the\n \
         unpin calls with eBPF: pin counts, fast-path fallbacks, latencies,\n \
         callers, processes and cgroups, as a live dashboard, plain output,\n \
         recordings and Prometheus metrics (with alert rules, a Grafana\n \
         dashboard and a systemd unit). The binary is static.\n"
    );
    std::fs::write(root.join("DEBIAN/control"), control)?;
    cmd::run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(root)
            .arg(deb),
    )
}

/// Installs `deb` into a scratch root with its own dpkg database, runs the
/// installed pinwatch, removes the package and fails if any file is left
/// outside dpkg's database.
fn check_deb(deb: &Path, root: &Path) -> anyhow::Result<()> {
    let admin = root.join("var/lib/dpkg");
    for dir in ["info", "updates", "triggers"] {
        std::fs::create_dir_all(admin.join(dir))?;
    }
    std::fs::write(admin.join("status"), "")?;
    let dpkg = || {
        let mut c = Command::new("dpkg");
        c.arg(format!("--root={}", root.display()))
            .arg("--force-not-root")
            .arg("--force-script-chrootless");
        c
    };
    cmd::output(dpkg().arg("-i").arg(deb)).context("dpkg -i")?;
    let installed = root.join("usr/bin/pinwatch");
    let said = cmd::output(Command::new(&installed).arg("--version"))
        .context("the installed pinwatch --version")?;
    let listed = cmd::output(dpkg().args(["-L", "pinwatch"]))?;
    println!(
        "dpkg -i: {} paths, {}",
        listed.lines().count(),
        said.lines().next().unwrap_or_default()
    );
    cmd::output(dpkg().args(["-r", "pinwatch"])).context("dpkg -r")?;
    let left = cmd::output(Command::new("find").arg(root).args([
        "-path",
        &admin.display().to_string(),
        "-prune",
        "-o",
        "-type",
        "f",
        "-print",
    ]))?;
    if !left.trim().is_empty() {
        bail!("dpkg -r left files behind:\n{left}");
    }
    println!("dpkg -r: nothing left");
    std::fs::remove_dir_all(root)?;
    Ok(())
}
