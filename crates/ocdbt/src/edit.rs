//! Several changes to the index made as one: a commit that runs meanwhile
//! holds all of them or none (a namespace's rename is a delete and a put,
//! and a version holding one without the other would lose a name).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::db::Db;
use crate::error::{OcdbtError, Result};
use crate::tree_write::Value;

/// One change of an [`Db::apply`] batch, applied in order.
#[derive(Debug, Clone)]
pub enum Change {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    /// Every key under the prefix.
    DeletePrefix(Vec<u8>),
    /// The value of the first key (if it has one) under the second,
    /// replacing it.
    Copy(Vec<u8>, Vec<u8>),
    /// Every key under the first prefix to the same suffix under the
    /// second, replacing what was there (the prefixes must not nest).
    RenamePrefix(Vec<u8>, Vec<u8>),
}

impl Db {
    /// Makes `changes` in order, under one hold of the index: a commit
    /// sees the index before them or after them all.
    pub fn apply(&self, changes: &[Change]) -> Result<()> {
        self.writable()?;
        for c in changes {
            match c {
                Change::Put(k, _) | Change::Copy(_, k) => crate::db::check_key(k)?,
                Change::RenamePrefix(old, new)
                    if old != new && (new.starts_with(old) || old.starts_with(new)) =>
                {
                    return Err(OcdbtError::Invalid("rename prefixes must not nest".into()));
                }
                _ => {}
            }
        }
        self.with_space(|| self.apply_once(changes))
    }

    fn apply_once(&self, changes: &[Change]) -> Result<()> {
        let _gate = self.put_gate.read();
        // Values too large to sit in the index are appended first, outside
        // the index lock.
        let inline_max = u64::from(self.config.max_inline_value_bytes);
        let mut values = Vec::new();
        for c in changes {
            if let Change::Put(_, v) = c {
                values.push(if v.len() as u64 <= inline_max {
                    Value::Inline(bytes::Bytes::copy_from_slice(v))
                } else {
                    Value::Indirect(self.append(v)?)
                });
            }
        }
        let mut values = values.into_iter();
        let mut ix = self.index.write();
        let map = Arc::make_mut(&mut ix.map);
        for c in changes {
            match c {
                Change::Put(k, _) => {
                    if let Some(v) = values.next() {
                        map.insert(k.clone(), v);
                    }
                }
                Change::Delete(k) => {
                    map.remove(k);
                }
                Change::DeletePrefix(p) => {
                    for k in keys_under(map, p) {
                        map.remove(&k);
                    }
                }
                Change::Copy(from, to) => {
                    if let Some(v) = map.get(from).cloned() {
                        map.insert(to.clone(), v);
                    }
                }
                Change::RenamePrefix(old, new) => {
                    if old == new {
                        continue;
                    }
                    for k in keys_under(map, new) {
                        map.remove(&k);
                    }
                    for k in keys_under(map, old) {
                        if let Some(v) = map.remove(&k) {
                            map.insert([new.as_slice(), &k[old.len()..]].concat(), v);
                        }
                    }
                }
            }
        }
        ix.dirty = true;
        Ok(())
    }
}

fn keys_under(map: &BTreeMap<Vec<u8>, Value>, prefix: &[u8]) -> Vec<Vec<u8>> {
    map.range(prefix.to_vec()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(k, _)| k.clone())
        .collect()
}
