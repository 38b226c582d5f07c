//! `fortalloc [options] -- program args...`: runs a program with fortalloc
//! as its `malloc`, by putting libfortalloc.so first in `LD_PRELOAD` and
//! `exec`ing it (so its exit status is the program's own).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

mod args;
mod library;

use args::Args;

fn main() -> ExitCode {
    let args = match args::parse(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("fortalloc: {msg}\nfortalloc: `fortalloc --help` shows the usage");
            return ExitCode::from(2);
        }
    };
    if args.help {
        println!("{}", args::USAGE);
        return ExitCode::SUCCESS;
    }
    if args.version {
        println!("fortalloc {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let lib = match library::find(args.build) {
        Ok(lib) => lib,
        Err(msg) => {
            eprintln!("fortalloc: {msg}");
            return ExitCode::from(127);
        }
    };
    let err = command(&args, lib).exec();
    eprintln!("fortalloc: cannot run {:?}: {err}", args.program);
    ExitCode::from(127)
}

/// The program's command, with the preload and the options set.
fn command(args: &Args, lib: PathBuf) -> Command {
    let mut preload = OsString::from(lib);
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(" ");
        preload.push(old);
    }
    let mut cmd = Command::new(&args.program);
    cmd.args(&args.rest).env("LD_PRELOAD", preload);
    if args.stats_all {
        cmd.env("FORTALLOC_SHOW_STATS", "1");
    } else if args.stats {
        // `exec` keeps this pid for the program; what it runs gets others.
        cmd.env("FORTALLOC_SHOW_STATS", format!("pid:{}", std::process::id()));
    }
    if args.verbose_all {
        cmd.env("FORTALLOC_VERBOSE", "1");
    } else if args.verbose {
        // As for `--stats`: the program keeps this pid.
        cmd.env("FORTALLOC_VERBOSE", format!("pid:{}", std::process::id()));
    }
    if let Some(ms) = &args.purge_delay {
        cmd.env("FORTALLOC_PURGE_DELAY", ms);
    }
    cmd
}
