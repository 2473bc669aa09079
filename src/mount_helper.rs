//! `mount.ckptfs`: the helper `mount -t ckptfs SOURCE DIR -o OPTIONS` and
//! an fstab line of type `ckptfs` run (mount(8) looks for
//! `/sbin/mount.<type>`, a link to the ckptfs binary). It turns mount(8)'s
//! arguments into `ckptfs mount --daemon …` and runs that in its place.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use anyhow::{bail, Result};

/// The name the binary answers to as a helper.
pub const HELPER_NAME: &str = "mount.ckptfs";

/// Options mount(8) or fstab pass that concern mount(8) itself, or that a
/// FUSE mount has anyway (ckptfs mounts are `nosuid,nodev,noatime`).
const IGNORED: &[&str] = &[
    "defaults", "auto", "noauto", "user", "nouser", "users", "owner", "nofail", "_netdev", "rw",
    "nosuid", "nodev", "noexec", "exec", "suid", "dev", "async", "atime", "noatime", "relatime",
    "loud", "silent",
];

/// What mount(8) asked for.
#[derive(Debug, Default, PartialEq)]
pub struct Helper {
    /// `ckptfs` arguments: `mount --daemon [options] SOURCE DIR`.
    pub argv: Vec<OsString>,
    /// `-f`: say what would run, run nothing.
    pub fake: bool,
    /// `-v`: say what runs.
    pub verbose: bool,
}

/// Parses `SOURCE DIR [-sfnv] [-N NS] [-o OPTIONS] [-t TYPE]`, the helper
/// calling convention of mount(8).
pub fn parse(args: &[OsString]) -> Result<Helper> {
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let (mut fake, mut verbose, mut sloppy) = (false, false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        match s.as_ref() {
            "-o" | "-t" | "-N" => {
                let Some(v) = it.next() else {
                    bail!("{s} needs a value");
                };
                if s == "-o" {
                    // Values are paths: split the bytes, never re-encode them.
                    options.extend(v.as_bytes().split(|&b| b == b',').map(OsStr::from_bytes));
                }
            }
            flags if flags.starts_with('-') && flags.len() > 1 => {
                for f in flags[1..].chars() {
                    match f {
                        'f' => fake = true,
                        'v' => verbose = true,
                        's' => sloppy = true,
                        // mtab is the kernel's now.
                        'n' => {}
                        other => bail!("unknown flag -{other}"),
                    }
                }
            }
            _ => positional.push(a.clone()),
        }
    }
    let [source, dir] = positional.as_slice() else {
        bail!("usage: {HELPER_NAME} SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS]");
    };
    let text = source.to_string_lossy();
    if text.contains("://") && !text.starts_with("s3://") {
        bail!("{text}: a local backing dir or s3://BUCKET/PREFIX");
    }
    let mut argv: Vec<OsString> = vec!["mount".into(), "--daemon".into()];
    for opt in options.iter().filter(|o| !o.is_empty()) {
        let bytes = opt.as_bytes();
        let (key, value) = match bytes.iter().position(|&b| b == b'=') {
            Some(i) => (&bytes[..i], Some(OsStr::from_bytes(&bytes[i + 1..]))),
            None => (bytes, None),
        };
        let key = String::from_utf8_lossy(key);
        let key = key.as_ref();
        let flag = |name: &str| -> Result<Vec<OsString>> {
            match value {
                Some(v) if !v.is_empty() => Ok(vec![name.into(), v.into()]),
                _ => bail!("option {key} needs a value ({key}=…)"),
            }
        };
        let more = match key {
            "config" => flag("--config")?,
            "version" => flag("--version")?,
            "profile" => flag("--profile")?,
            "profile_out" | "profile-out" => flag("--profile-out")?,
            "log" => flag("--log")?,
            "cache_dir" | "cache-dir" => flag("--cache-dir")?,
            "cache_size" | "cache-size" => flag("--cache-size")?,
            "ro" | "read-only" | "read_only" => vec!["--read-only".into()],
            "nonempty" => vec!["--nonempty".into()],
            k if IGNORED.contains(&k) || k.starts_with("x-") || k == "comment" => vec![],
            _ if sloppy => vec![],
            _ => bail!(
                "unknown option {opt:?}; known: config=, ro, version=, profile=, profile_out=, log=, cache_dir=, cache_size=, nonempty (and mount(8)'s own: {})",
                IGNORED.join(",")
            ),
        };
        argv.extend(more);
    }
    argv.push(source.clone());
    argv.push(dir.clone());
    Ok(Helper {
        argv,
        fake,
        verbose,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    fn argv(s: &[&str]) -> Vec<String> {
        parse(&args(s))
            .expect("parse")
            .argv
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn fstab_options_become_mount_flags() {
        assert_eq!(
            argv(&[
                "/data/ck",
                "/mnt/ck",
                "-o",
                "rw,config=/etc/ckptfs/t5x.toml,nofail,x-systemd.automount,profile=counters"
            ]),
            [
                "mount",
                "--daemon",
                "--config",
                "/etc/ckptfs/t5x.toml",
                "--profile",
                "counters",
                "/data/ck",
                "/mnt/ck"
            ]
        );
        assert_eq!(
            argv(&["-n", "/b", "/m", "-o", "ro,version=7", "-t", "ckptfs"]),
            [
                "mount",
                "--daemon",
                "--read-only",
                "--version",
                "7",
                "/b",
                "/m"
            ]
        );
    }

    #[test]
    fn a_config_path_keeps_its_bytes() {
        let path = OsStr::from_bytes(b"config=/etc/ck\xff.toml");
        let h =
            parse(&[OsString::from("/b"), "/m".into(), "-o".into(), path.into()]).expect("parse");
        assert_eq!(h.argv[3], OsStr::from_bytes(b"/etc/ck\xff.toml"));
    }

    #[test]
    fn unknown_options_are_refused_unless_sloppy() {
        let e = parse(&args(&["/b", "/m", "-o", "compress=9"])).expect_err("unknown");
        assert!(e.to_string().contains("compress=9"), "{e}");
        let h = parse(&args(&["/b", "/m", "-s", "-o", "compress=9"])).expect("sloppy");
        assert_eq!(h.argv.len(), 4);
        let e = parse(&args(&["/b", "/m", "-o", "config="])).expect_err("empty value");
        assert!(e.to_string().contains("needs a value"), "{e}");
    }

    #[test]
    fn flags_and_arity_are_checked() {
        let h = parse(&args(&["/b", "/m", "-fv"])).expect("flags");
        assert!(h.fake && h.verbose);
        assert!(parse(&args(&["/b"])).is_err());
        assert!(parse(&args(&["/b", "/m", "/x"])).is_err());
        assert!(parse(&args(&["/b", "/m", "-o"])).is_err());
        assert!(parse(&args(&["/b", "/m", "-q"])).is_err());
        assert!(parse(&args(&["gs://bucket/prefix", "/m"])).is_err());
    }

    #[test]
    fn object_store_sources_pass_through() {
        assert_eq!(
            argv(&["s3://ck/run1", "/m", "-o", "ro,cache_dir=/var/cache/ck"]),
            [
                "mount",
                "--daemon",
                "--read-only",
                "--cache-dir",
                "/var/cache/ck",
                "s3://ck/run1",
                "/m"
            ]
        );
    }
}
