//! The launcher's command line.

use std::ffi::OsString;

use crate::library::Build;

pub const USAGE: &str = "\
usage: fortalloc [options] [--] program [args...]

Runs `program` with fortalloc as its malloc (LD_PRELOAD=libfortalloc.so,
keeping any LD_PRELOAD entries already set) and exits with its status.

options:
  --secure            use the hardened library recommended to services: guard
                      pages, encoded free lists, random order, double-free
                      detection, overflow canaries and a quarantine of
                      freed blocks, at about mimalloc-secure's cost (see
                      SECURITY.md)
  --secure-max        use the hardened library with every defence: also the
                      write-after-free check and freed large blocks sealed
                      at once (see SECURITY.md)
  --stats             print the program's statistics to stderr at exit, not
                      those of the programs it runs
                      (FORTALLOC_SHOW_STATS=pid:<the program's pid>)
  --stats-all         print every process's statistics at exit: the
                      program's and those of all programs it runs, each
                      table headed by its pid and name (FORTALLOC_SHOW_STATS=1)
  --verbose           print at the program's start which library it runs on,
                      its build, guards, quarantine and options
                      (FORTALLOC_VERBOSE=pid:<the program's pid>)
  --verbose-all       print that in every process it runs too
                      (FORTALLOC_VERBOSE=1)
  --purge-delay MS    milliseconds before freed memory goes back to the OS
                      (FORTALLOC_PURGE_DELAY)
  -h, --help          this text
  -V, --version       the launcher's version

The library is looked for in $FORTALLOC_LIB, next to this executable, in
../lib from it, and in the fortalloc workspace it was built from (which it
builds with cargo if the library is missing there).";

#[derive(Debug, Default, PartialEq)]
pub struct Args {
    pub build: Build,
    pub stats: bool,
    pub stats_all: bool,
    pub verbose: bool,
    pub verbose_all: bool,
    pub help: bool,
    pub version: bool,
    pub purge_delay: Option<String>,
    pub program: OsString,
    pub rest: Vec<OsString>,
}

/// Parses the arguments after the launcher's own name.
pub fn parse(mut it: impl Iterator<Item = OsString>) -> Result<Args, String> {
    let mut args = Args::default();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--") => break,
            Some("--secure") => args.build = Build::Secure,
            Some("--secure-max") => args.build = Build::SecureMax,
            Some("--stats") => args.stats = true,
            Some("--stats-all") => args.stats_all = true,
            Some("--verbose") => args.verbose = true,
            Some("--verbose-all") => args.verbose_all = true,
            Some("-h" | "--help") => {
                args.help = true;
                return Ok(args);
            }
            Some("-V" | "--version") => {
                args.version = true;
                return Ok(args);
            }
            Some("--purge-delay") => {
                let ms = it.next().and_then(|v| v.into_string().ok()).unwrap_or_default();
                if ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!(
                        "--purge-delay needs a number of milliseconds, not {ms:?}"
                    ));
                }
                args.purge_delay = Some(ms);
            }
            Some(opt) if opt.starts_with('-') => return Err(format!("unknown option {opt}")),
            _ => {
                args.program = a;
                args.rest = it.collect();
                return Ok(args);
            }
        }
    }
    args.program = it.next().ok_or("no program to run")?;
    args.rest = it.collect();
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Result<Args, String> {
        parse(v.iter().map(OsString::from))
    }

    #[test]
    fn options_then_program() {
        let a = p(&["--secure", "--stats", "--", "ls", "-l", "--stats"]).expect("parse");
        assert!(a.build == Build::Secure && a.stats && !a.stats_all && !a.verbose);
        assert_eq!(p(&["--secure-max", "ls"]).expect("parse").build, Build::SecureMax);
        assert_eq!(p(&["ls"]).expect("parse").build, Build::Plain);
        assert!(p(&["--stats-all", "ls"]).expect("parse").stats_all);
        assert_eq!(a.program, "ls");
        assert_eq!(a.rest, ["-l", "--stats"]);
    }

    #[test]
    fn program_without_separator_takes_the_rest() {
        let a = p(&["--verbose", "python3", "-c", "print(1)"]).expect("parse");
        assert!(a.verbose && !a.verbose_all);
        assert!(p(&["--verbose-all", "ls"]).expect("parse").verbose_all);
        assert_eq!(a.program, "python3");
        assert_eq!(a.rest, ["-c", "print(1)"]);
    }

    #[test]
    fn errors() {
        assert!(p(&[]).is_err());
        assert!(p(&["--"]).is_err());
        assert!(p(&["--bogus", "ls"]).is_err());
        assert!(p(&["--purge-delay", "x", "ls"]).is_err());
        assert_eq!(
            p(&["--purge-delay", "50", "ls"])
                .expect("ok")
                .purge_delay
                .as_deref(),
            Some("50")
        );
        assert!(p(&["--help"]).expect("ok").help);
        assert!(p(&["--version"]).expect("ok").version);
        assert!(p(&["-V"]).expect("ok").version);
    }
}
