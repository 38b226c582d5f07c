//! Where things are: the cargo to build with, the workspace, and `target/bench/`.

use std::path::{Path, PathBuf};

pub struct Paths {
    /// The cargo that runs us (`$CARGO`), else `cargo` from `PATH`.
    pub cargo: PathBuf,
    /// The workspace root: the parent of this package's directory.
    pub workspace_root: PathBuf,
    /// `<target>/bench`: worker builds (one directory per allocator) and results.
    pub bench_dir: PathBuf,
}

impl Paths {
    pub fn discover() -> Paths {
        let cargo = std::env::var_os("CARGO")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("cargo"));
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let workspace_root = manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf();
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => workspace_root.join(dir),
            None => workspace_root.join("target"),
        };
        Paths {
            cargo,
            workspace_root,
            bench_dir: target.join("bench"),
        }
    }
}
