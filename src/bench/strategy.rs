//! Strategies: `plain` (the save and load on the backing disk, no FUSE) and
//! one per mount config in `mount-configs/`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::verify::Narrowing;
use crate::config::{MountConfig, StoredDtype};
use crate::store::s3::S3Location;

/// Strategy names that put a mount config on the object store of `--store`.
pub const S3_PREFIX: &str = "s3-";

/// The reference strategy's name.
pub const PLAIN: &str = "plain";

/// The seeds' order; other configs follow alphabetically.
pub const SEED_ORDER: [&str; 9] = [
    PLAIN,
    "passthrough",
    "tensorstore-basic",
    "t5x",
    "ts-concurrency",
    "ts-chunks",
    "ts-compression",
    "ts-float16",
    "ts-ocdbt",
];

/// One way of storing the checkpoint the benchmark measures: the plain disk, or a mount config.
#[derive(Debug, Clone)]
pub struct Strategy {
    /// `plain`, or the mount config's file stem.
    pub name: String,
    /// None for `plain`.
    pub config: Option<MountSetup>,
    /// The object store an `s3-<config>` strategy saves to and loads from
    /// (None: the local disk).
    pub store: Option<S3Location>,
}

/// A mount config a strategy mounts with.
#[derive(Debug, Clone)]
pub struct MountSetup {
    /// The config file.
    pub path: PathBuf,
    /// The config file's text, kept in the results.
    pub toml: String,
    /// How its layout stores float tensors.
    pub narrowing: Narrowing,
}

impl Strategy {
    /// How the strategy stores float tensors (`None` for `plain`).
    pub fn narrowing(&self) -> Narrowing {
        self.config
            .as_ref()
            .map(|c| c.narrowing)
            .unwrap_or(Narrowing::None)
    }
}

/// Every strategy available: `plain` and each `*.toml` in `configs`.
pub fn discover(configs: &Path) -> Result<Vec<Strategy>> {
    let mut out = vec![Strategy {
        name: PLAIN.into(),
        config: None,
        store: None,
    }];
    let entries = std::fs::read_dir(configs)
        .with_context(|| format!("list mount configs in {}", configs.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("list {}", configs.display()))?
            .path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let Some(name) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
            continue;
        };
        let toml =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let narrowing = narrowing_of(&toml, &name);
        out.push(Strategy {
            name,
            config: Some(MountSetup {
                path,
                toml,
                narrowing,
            }),
            store: None,
        });
    }
    out.sort_by_key(|s| {
        let rank = SEED_ORDER
            .iter()
            .position(|n| *n == s.name)
            .unwrap_or(SEED_ORDER.len());
        (rank, s.name.clone())
    });
    Ok(out)
}

/// The stored dtype a config asks for. A config the mount refuses still has
/// its `[layout] dtype` read, so its verification bound is known should a
/// later build accept it.
fn narrowing_of(toml_text: &str, name: &str) -> Narrowing {
    let dtype = match MountConfig::parse(toml_text, name) {
        Ok(c) => c.layout.dtype,
        Err(_) => {
            let raw = toml_text.parse::<toml::Table>().ok();
            match raw
                .as_ref()
                .and_then(|t| t.get("layout"))
                .and_then(|l| l.get("dtype"))
                .and_then(|d| d.as_str())
            {
                Some("float16") => StoredDtype::Float16,
                Some("bfloat16") => StoredDtype::Bfloat16,
                _ => StoredDtype::Keep,
            }
        }
    };
    Narrowing::from(dtype)
}

/// The strategies named in `wanted` (all when empty), in the order given.
/// `s3-<config>` is the config's strategy on `store`.
pub fn select(
    all: Vec<Strategy>,
    wanted: &[String],
    store: Option<&S3Location>,
) -> Result<Vec<Strategy>> {
    if wanted.is_empty() {
        return Ok(all);
    }
    let mut out: Vec<Strategy> = Vec::new();
    for name in wanted {
        if out.iter().any(|s| &s.name == name) {
            continue;
        }
        if let Some(base) = name.strip_prefix(S3_PREFIX) {
            let Some(s) = all.iter().find(|s| s.name == base) else {
                bail!("unknown strategy `{name}`: no mount config `{base}`");
            };
            if s.config.is_none() {
                bail!("`{name}`: {PLAIN} is the local disk itself; pick a mount config (s3-default, s3-ts-ocdbt, …)");
            }
            let Some(at) = store else {
                bail!("`{name}` needs --store s3://BUCKET/PREFIX (endpoint and keys from AWS_*)");
            };
            out.push(Strategy {
                name: name.clone(),
                config: s.config.clone(),
                store: Some(at.clone()),
            });
            continue;
        }
        match all.iter().find(|s| &s.name == name) {
            Some(s) => out.push(s.clone()),
            None => bail!(
                "unknown strategy `{name}`; available: {}",
                all.iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_configs_are_found_after_plain_in_seed_order() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("mount-configs");
        let all = discover(&dir).expect("discover");
        assert_eq!(all[0].name, PLAIN);
        assert_eq!(all[1].name, "passthrough");
        assert!(all.iter().any(|s| s.name == "chunked"));
        let picked = select(all.clone(), &["chunked".into(), PLAIN.into()], None).expect("select");
        assert_eq!(picked[0].name, "chunked");
        assert!(select(all.clone(), &["nope".into()], None).is_err());
        // s3-<config>: the config on the store, which must be given.
        let at = S3Location::parse("s3://b/p").expect("location");
        let s3 = select(all.clone(), &["s3-default".into()], Some(&at)).expect("s3");
        assert_eq!(s3[0].store.as_ref(), Some(&at));
        assert!(s3[0].config.is_some());
        assert!(select(all.clone(), &["s3-default".into()], None).is_err());
        assert!(select(all, &["s3-plain".into()], Some(&at)).is_err());
    }

    #[test]
    fn a_float16_layout_is_lossy() {
        assert_eq!(
            narrowing_of("[layout]\ndtype = \"float16\"\n", "x"),
            Narrowing::Float16
        );
        assert_eq!(
            narrowing_of("[layout]\ndtype = \"bfloat16\"\nindex = \"packed\"\n", "x"),
            Narrowing::Bfloat16
        );
        assert_eq!(
            narrowing_of("[layout]\ncodec = \"zstd\"\n", "x"),
            Narrowing::None
        );
    }
}
