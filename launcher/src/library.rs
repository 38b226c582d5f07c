//! Finding libfortalloc.so (and building it, in the workspace this
//! launcher came from, if it is missing there or older than the sources).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

const NAME: &str = "libfortalloc.so";

/// Which library: the plain build or one of the hardened presets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Build {
    #[default]
    Plain,
    /// The preset recommended to every service (`--features secure`).
    Secure,
    /// Every defence (`--features secure-max`).
    SecureMax,
}

impl Build {
    /// The preset's Cargo feature, and the target directory its library
    /// is built in (the plain one uses the default).
    fn preset(self) -> Option<&'static str> {
        match self {
            Build::Plain => None,
            Build::Secure => Some("secure"),
            Build::SecureMax => Some("secure-max"),
        }
    }

    /// The library's file name when installed beside the launcher.
    fn installed_name(self) -> &'static str {
        match self {
            Build::Plain => NAME,
            Build::Secure => "libfortalloc-secure.so",
            Build::SecureMax => "libfortalloc-secure-max.so",
        }
    }

    /// The cargo arguments that select the preset's build.
    fn cargo_args(self) -> Vec<String> {
        match self.preset() {
            None => Vec::new(),
            Some(p) => vec![
                "--features".into(),
                p.into(),
                "--target-dir".into(),
                format!("target/{p}"),
            ],
        }
    }
}

/// The workspace this launcher was built in.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Where the workspace keeps the library of `build`.
fn workspace_library(build: Build) -> PathBuf {
    let target = match build.preset() {
        None => workspace().join("target"),
        Some(p) => workspace().join("target").join(p),
    };
    target.join("release").join(NAME)
}

/// The library to preload: the first that exists of `$FORTALLOC_LIB`, next
/// to this executable (`libfortalloc-secure.so` and
/// `libfortalloc-secure-max.so` for the presets), in `../lib` from it, and
/// in the workspace (built there if missing).
pub fn find(build: Build) -> Result<PathBuf, String> {
    if let Some(lib) = std::env::var_os("FORTALLOC_LIB") {
        let lib = PathBuf::from(lib);
        return if lib.exists() {
            Ok(lib)
        } else {
            Err(format!("FORTALLOC_LIB={} does not exist", lib.display()))
        };
    }
    let name = build.installed_name();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        for candidate in [dir.join(name), dir.join("../lib").join(name)] {
            if candidate.exists() {
                if in_workspace_target(&dir) && stale(&candidate, &workspace()) {
                    // A `cargo run` of the launcher after editing the
                    // allocator rebuilds the launcher, not the library
                    // beside it: the program would run the old allocator.
                    build_beside(&dir)?;
                }
                return Ok(candidate);
            }
        }
    }
    let lib = workspace_library(build);
    let sources_here = workspace().join("capi/Cargo.toml").exists();
    if sources_here && (!lib.exists() || stale(&lib, &workspace())) {
        build_in_workspace(build)?;
    }
    if lib.exists() {
        Ok(lib)
    } else {
        Err(format!(
            "{} not found; build it with: cargo build --release -p fortalloc-capi {}",
            lib.display(),
            build.cargo_args().join(" ")
        ))
    }
}

/// Whether `dir` is a profile directory of the workspace's own target
/// directory (a launcher run from a checkout, not an installed one).
fn in_workspace_target(dir: &Path) -> bool {
    let ws = workspace();
    ws.join("capi/Cargo.toml").exists() && dir.starts_with(ws.join("target"))
}

/// The newest modification time of the files the library is built from
/// (the allocator's and the C library's sources and manifests).
fn newest_source(ws: &Path) -> Option<SystemTime> {
    fn walk(dir: &Path, newest: &mut Option<SystemTime>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, newest);
            } else if let Ok(t) = entry.metadata().and_then(|m| m.modified()) {
                *newest = (*newest).max(Some(t));
            }
        }
    }
    let mut newest = None;
    for dir in ["src", "capi/src", "capi/include"] {
        walk(&ws.join(dir), &mut newest);
    }
    for file in ["Cargo.toml", "capi/Cargo.toml"] {
        if let Ok(t) = std::fs::metadata(ws.join(file)).and_then(|m| m.modified()) {
            newest = newest.max(Some(t));
        }
    }
    newest
}

/// Whether `lib` is older than a source it is built from in `ws`.
fn stale(lib: &Path, ws: &Path) -> bool {
    let Ok(built) = std::fs::metadata(lib).and_then(|m| m.modified()) else {
        return true;
    };
    newest_source(ws).is_some_and(|newest| newest > built)
}

/// Rebuilds the library in the profile directory `dir` of the workspace's
/// target directory (the one the launcher itself was built in).
fn build_beside(dir: &Path) -> Result<(), String> {
    let mut cmd = cargo();
    cmd.current_dir(workspace())
        .args(["build", "-p", "fortalloc-capi"]);
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
        None => return Ok(()),
    }
    eprintln!("fortalloc: the library is older than its sources; rebuilding: {cmd:?}");
    run(cmd)
}

fn build_in_workspace(build: Build) -> Result<(), String> {
    let mut cmd = cargo();
    cmd.current_dir(workspace())
        .args(["build", "--release", "-p", "fortalloc-capi"])
        .args(build.cargo_args());
    eprintln!("fortalloc: building the library: {cmd:?}");
    run(cmd)
}

/// The cargo that built this launcher (or the one on `PATH`).
fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Runs a cargo build of the library, turning its failure into a message.
fn run(mut cmd: Command) -> Result<(), String> {
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("building the library failed ({status})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, File};
    use std::time::Duration;

    fn touch(path: &Path, at: SystemTime) {
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let f = File::create(path).expect("create");
        f.set_modified(at).expect("set mtime");
    }

    #[test]
    fn each_preset_builds_into_its_own_target_directory() {
        assert!(Build::Plain.cargo_args().is_empty());
        assert_eq!(
            Build::SecureMax.cargo_args(),
            ["--features", "secure-max", "--target-dir", "target/secure-max"]
        );
        assert_eq!(
            workspace_library(Build::Secure),
            workspace().join("target/secure/release/libfortalloc.so")
        );
        assert_eq!(
            workspace_library(Build::SecureMax),
            workspace().join("target/secure-max/release/libfortalloc.so")
        );
        assert_ne!(Build::Secure.installed_name(), Build::SecureMax.installed_name());
    }

    #[test]
    fn a_library_older_than_any_source_is_stale() {
        let ws = std::env::temp_dir().join(format!("fortalloc-stale-{}", std::process::id()));
        let _ = fs::remove_dir_all(&ws);
        let t0 = SystemTime::now() - Duration::from_secs(3600);
        let lib = ws.join("target/debug/libfortalloc.so");
        touch(&ws.join("src/core/heap.rs"), t0);
        touch(&ws.join("capi/src/lib.rs"), t0);
        touch(&lib, t0 + Duration::from_secs(60));
        assert!(!stale(&lib, &ws), "built after every source");
        touch(&ws.join("src/core/page.rs"), t0 + Duration::from_secs(120));
        assert!(
            stale(&lib, &ws),
            "a source in a subdirectory changed after the build"
        );
        touch(&lib, t0 + Duration::from_secs(180));
        assert!(!stale(&lib, &ws));
        touch(&ws.join("capi/Cargo.toml"), t0 + Duration::from_secs(240));
        assert!(stale(&lib, &ws), "the C library's manifest changed");
        assert!(
            stale(&ws.join("target/debug/missing.so"), &ws),
            "a missing library"
        );
        fs::remove_dir_all(&ws).expect("clean up");
    }
}
