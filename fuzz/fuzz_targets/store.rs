//! Every decoder that reads a backing store's bytes from disk: the OCDBT
//! manifest, B+tree nodes, version-tree nodes, the data-file table, the
//! record envelope, and the file manifests (`zarr.json`). A corrupted or
//! hostile store must give an error, never a panic, a hang or a runaway
//! allocation (libFuzzer's -timeout and -rss_limit_mb catch those).
//!
//! Input: one selector byte, then the bytes. For the three record kinds the
//! bytes are the record's body, wrapped here in a valid envelope so the
//! fuzzer gets past the CRC to the body decoders; selector 5 feeds whole
//! records, envelope included.
#![no_main]

use ckptfs::layout::manifest::{parse_node, NodeDoc};
use ckptfs::ocdbt::codec::Reader;
use ckptfs::ocdbt::envelope::{self, BTREE_NODE_MAGIC, MANIFEST_MAGIC, VERSION_NODE_MAGIC};
use ckptfs::ocdbt::{btree, data_file_table, manifest, version_tree, Compression};
use libfuzzer_sys::fuzz_target;

const MAX_NODE: usize = 16 << 20;

fn wrap(magic: u32, body: &[u8]) -> Option<Vec<u8>> {
    envelope::encode(magic, Compression::None, body).ok()
}

fn records(data: &[u8]) {
    let _ = manifest::decode(data);
    let _ = btree::decode(data, "", MAX_NODE);
    for arity in [1, 4] {
        let _ = version_tree::decode(data, "", arity);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => {
            if let Some(rec) = wrap(MANIFEST_MAGIC, rest) {
                if let Ok(m) = manifest::decode(&rec) {
                    assert!(!m.versions.is_empty(), "a manifest without versions");
                }
            }
        }
        1 => {
            if let Some(rec) = wrap(BTREE_NODE_MAGIC, rest) {
                let _ = btree::decode(&rec, "base/", MAX_NODE);
            }
        }
        2 => {
            let Some((&arity, body)) = rest.split_first() else {
                return;
            };
            if let Some(rec) = wrap(VERSION_NODE_MAGIC, body) {
                let _ = version_tree::decode(&rec, "", arity % 17);
            }
        }
        3 => {
            let mut r = Reader::new(rest);
            let _ = data_file_table::decode(&mut r, "base/");
        }
        4 => {
            if let NodeDoc::File(m) = parse_node(rest) {
                // What the filesystem derives from a manifest it loads.
                let _ = m.to_group_json();
            }
        }
        _ => records(rest),
    }
});
