//! Finding libfortalloc.so (and building it, in the workspace this
//! launcher came from, if it is missing there).

use std::path::{Path, PathBuf};
use std::process::Command;

const NAME: &str = "libfortalloc.so";

/// The workspace this launcher was built in.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Where the workspace keeps the plain or the hardened library.
fn workspace_library(secure: bool) -> PathBuf {
    let ws = workspace();
    if secure {
        ws.join("target/secure/release").join(NAME)
    } else {
        ws.join("target/release").join(NAME)
    }
}

/// The library to preload: the first that exists of `$FORTALLOC_LIB`, next
/// to this executable (`libfortalloc-secure.so` for the hardened one), in
/// `../lib` from it, and in the workspace (built there if missing).
pub fn find(secure: bool) -> Result<PathBuf, String> {
    if let Some(lib) = std::env::var_os("FORTALLOC_LIB") {
        let lib = PathBuf::from(lib);
        return if lib.exists() {
            Ok(lib)
        } else {
            Err(format!("FORTALLOC_LIB={} does not exist", lib.display()))
        };
    }
    let name = if secure { "libfortalloc-secure.so" } else { NAME };
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        for candidate in [dir.join(name), dir.join("../lib").join(name)] {
            if candidate.exists() {
                return Ok(candidate);
            }
        }
    }
    let lib = workspace_library(secure);
    if !lib.exists() && workspace().join("capi/Cargo.toml").exists() {
        build(secure)?;
    }
    if lib.exists() {
        Ok(lib)
    } else {
        Err(format!(
            "{} not found; build it with: cargo build --release -p fortalloc-capi{}",
            lib.display(),
            if secure {
                " --features secure --target-dir target/secure"
            } else {
                ""
            }
        ))
    }
}

fn build(secure: bool) -> Result<(), String> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace())
        .args(["build", "--release", "-p", "fortalloc-capi"]);
    if secure {
        cmd.args(["--features", "secure", "--target-dir", "target/secure"]);
    }
    eprintln!("fortalloc: building the library: {cmd:?}");
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("building the library failed ({status})"))
    }
}
