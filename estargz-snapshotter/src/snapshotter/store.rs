//! Snapshot metadata in an embedded, crash-safe database (`redb`, one file `metadata.db`).
//!
//! The same model and the same rules as containerd's `snapshots/storage` (bolt) package, which
//! the overlayfs snapshotter uses: every snapshot has a name (the key), a numeric id (its
//! directory under `snapshots/`), a kind, an optional committed parent, labels, timestamps and,
//! once committed, its disk usage. Every change is one write transaction committed with fsync,
//! so a crash leaves either the old or the new state, never a mix.
//!
//! This module owns only metadata: it never touches snapshot directories or mounts.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use super::error::{Error, Result};

/// Snapshots by name: JSON-encoded [`Record`].
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
/// Counters: `"id"` = the last snapshot id handed out.
const SEQUENCES: TableDefinition<&str, u64> = TableDefinition::new("sequences");
/// Layer status by snapshot name (see [`crate::status`]): JSON, kept so `estargz status`
/// still explains a layer after a restart.
const LAYERS: TableDefinition<&str, &[u8]> = TableDefinition::new("layers");

/// The kind of a snapshot, with containerd's numbering (`snapshots.v1.Kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A read-only view of a committed parent.
    View,
    /// A writable snapshot being prepared.
    Active,
    /// A committed, read-only snapshot that can be a parent.
    Committed,
}

impl Kind {
    /// The name containerd's filters use (`kind==committed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

/// A point in time, as seconds and nanoseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Timestamp {
    /// Seconds since the epoch.
    pub secs: i64,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos(),
        }
    }
}

/// Disk usage of a snapshot's own directory: bytes allocated and distinct inodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Bytes on disk.
    pub size: i64,
    /// Distinct inodes.
    pub inodes: i64,
}

/// What the database stores per snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The numeric id; the snapshot's directory is `snapshots/<id>`.
    pub id: u64,
    /// Its kind.
    pub kind: Kind,
    /// The name of its parent (a committed snapshot), or `""`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parent: String,
    /// Labels (empty values are never stored).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// When it was created (for committed snapshots: committed).
    pub created: Timestamp,
    /// When it was last changed.
    pub updated: Timestamp,
    /// Disk usage recorded at commit.
    #[serde(default)]
    pub usage: Usage,
}

/// A snapshot as the metadata API returns it: name plus [`Record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The snapshot's name (its key).
    pub name: String,
    /// Everything else.
    pub record: Record,
}

/// A created active or view snapshot: its id and its ancestors' ids, nearest parent first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The new snapshot's id.
    pub id: u64,
    /// The ids of its parent, grandparent, ...
    pub parent_ids: Vec<u64>,
}

/// The metadata database.
#[derive(Debug)]
pub struct Store {
    db: Database,
}

fn clean_labels(mut labels: BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels.retain(|_, v| !v.is_empty());
    labels
}

fn get(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<Option<Record>> {
    match table.get(name)? {
        Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
        None => Ok(None),
    }
}

fn put(table: &mut redb::Table<&str, &[u8]>, name: &str, rec: &Record) -> Result<()> {
    let bytes = serde_json::to_vec(rec)?;
    table.insert(name, bytes.as_slice())?;
    Ok(())
}

/// The ids of `parent` and its ancestors, nearest first.
fn parent_chain(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    parent: &str,
) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    let mut next = parent.to_owned();
    while !next.is_empty() {
        let rec = get(table, &next)?
            .ok_or_else(|| Error::NotFound(format!("missing parent {next:?}")))?;
        ids.push(rec.id);
        next = rec.parent;
        if ids.len() > 10_000 {
            return Err(Error::Store(format!("parent chain of {parent:?} loops")));
        }
    }
    Ok(ids)
}

impl Store {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        {
            txn.open_table(SNAPSHOTS)?;
            txn.open_table(SEQUENCES)?;
            txn.open_table(LAYERS)?;
        }
        txn.commit()?;
        Ok(Store { db })
    }

    /// Creates an active or view snapshot `key` on top of the committed `parent` (or none),
    /// and runs `make_dir(id)` (which creates the snapshot's directory) inside the same
    /// transaction: if it fails, nothing is recorded.
    pub fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
        make_dir: impl FnOnce(&Created) -> Result<()>,
    ) -> Result<Created> {
        if kind == Kind::Committed {
            return Err(Error::InvalidArgument(format!(
                "snapshot type committed invalid; only snapshots of type Active or View can be created ({key})"
            )));
        }
        let txn = self.db.begin_write()?;
        let created = {
            let mut table = txn.open_table(SNAPSHOTS)?;
            if !parent.is_empty() {
                let p = get(&table, parent)?
                    .ok_or_else(|| Error::NotFound(format!("missing parent {parent:?} bucket")))?;
                if p.kind != Kind::Committed {
                    return Err(Error::InvalidArgument(format!(
                        "parent {parent:?} is not committed snapshot"
                    )));
                }
            }
            if get(&table, key)?.is_some() {
                return Err(Error::AlreadyExists(format!("snapshot {key}")));
            }
            let id = {
                let mut seq = txn.open_table(SEQUENCES)?;
                let id = seq.get("id")?.map(|v| v.value()).unwrap_or(0) + 1;
                seq.insert("id", id)?;
                id
            };
            let now = Timestamp::now();
            let rec = Record {
                id,
                kind,
                parent: parent.to_owned(),
                labels: clean_labels(labels),
                created: now,
                updated: now,
                usage: Usage::default(),
            };
            put(&mut table, key, &rec)?;
            let created = Created {
                id,
                parent_ids: parent_chain(&table, parent)?,
            };
            make_dir(&created)?;
            created
        };
        txn.commit()?;
        Ok(created)
    }

    /// Commits the active snapshot `key` as `name` with `usage`; its labels are replaced by
    /// `labels` (containerd's rule: labels are not inherited on commit).
    pub fn commit(
        &self,
        key: &str,
        name: &str,
        usage: Usage,
        labels: BTreeMap<String, String>,
    ) -> Result<u64> {
        let txn = self.db.begin_write()?;
        let id = {
            let mut table = txn.open_table(SNAPSHOTS)?;
            if get(&table, name)?.is_some() {
                return Err(Error::AlreadyExists(format!("committed snapshot {name}")));
            }
            let mut rec = get(&table, key)?
                .ok_or_else(|| Error::NotFound(format!("failed to get active snapshot {key:?}")))?;
            if rec.kind != Kind::Active {
                return Err(Error::FailedPrecondition(format!(
                    "snapshot {key:?} is not active"
                )));
            }
            rec.kind = Kind::Committed;
            rec.created = Timestamp::now();
            rec.updated = rec.created;
            rec.labels = clean_labels(labels);
            rec.usage = usage;
            table.remove(key)?;
            put(&mut table, name, &rec)?;
            rec.id
        };
        txn.commit()?;
        Ok(id)
    }

    /// Removes `key` (which must have no children) and returns its record.
    pub fn remove(&self, key: &str) -> Result<Record> {
        let txn = self.db.begin_write()?;
        let rec = {
            let mut table = txn.open_table(SNAPSHOTS)?;
            let rec =
                get(&table, key)?.ok_or_else(|| Error::NotFound(format!("snapshot {key}")))?;
            if rec.kind == Kind::Committed {
                for item in table.iter()? {
                    let (_, v) = item?;
                    let child: Record = serde_json::from_slice(v.value())?;
                    if child.parent == key {
                        return Err(Error::FailedPrecondition(
                            "cannot remove snapshot with child".to_owned(),
                        ));
                    }
                }
            }
            table.remove(key)?;
            rec
        };
        txn.commit()?;
        Ok(rec)
    }

    /// The record of `key`.
    pub fn get(&self, key: &str) -> Result<Record> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SNAPSHOTS)?;
        get(&table, key)?.ok_or_else(|| Error::NotFound(format!("snapshot {key}")))
    }

    /// The record of `key` and its ancestors' ids, nearest first.
    pub fn get_with_parents(&self, key: &str) -> Result<(Record, Vec<u64>)> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SNAPSHOTS)?;
        let rec = get(&table, key)?.ok_or_else(|| Error::NotFound(format!("snapshot {key}")))?;
        let ids = parent_chain(&table, &rec.parent)?;
        Ok((rec, ids))
    }

    /// The records of `key`'s ancestors with their names, nearest first.
    pub fn ancestors(&self, key: &str) -> Result<Vec<Info>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SNAPSHOTS)?;
        let rec = get(&table, key)?.ok_or_else(|| Error::NotFound(format!("snapshot {key}")))?;
        let mut out = Vec::new();
        let mut next = rec.parent;
        while !next.is_empty() && out.len() < 10_000 {
            let rec = get(&table, &next)?
                .ok_or_else(|| Error::NotFound(format!("missing parent {next:?}")))?;
            let parent = rec.parent.clone();
            out.push(Info {
                name: next,
                record: rec,
            });
            next = parent;
        }
        Ok(out)
    }

    /// Updates the labels of `name` as containerd's `UpdateInfo` does: with no field paths
    /// the labels are replaced; `labels` replaces them all; `labels.KEY` sets (or, with an
    /// empty value, removes) one label. Any other path is an invalid argument.
    pub fn update(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        paths: &[String],
    ) -> Result<Record> {
        let txn = self.db.begin_write()?;
        let rec = {
            let mut table = txn.open_table(SNAPSHOTS)?;
            let mut rec = get(&table, name)?
                .ok_or_else(|| Error::NotFound("snapshot does not exist".to_owned()))?;
            if paths.is_empty() {
                rec.labels = labels;
            } else {
                for path in paths {
                    if let Some(key) = path.strip_prefix("labels.") {
                        match labels.get(key) {
                            Some(v) => rec.labels.insert(key.to_owned(), v.clone()),
                            None => rec.labels.remove(key),
                        };
                    } else if path == "labels" {
                        rec.labels = labels.clone();
                    } else {
                        return Err(Error::InvalidArgument(format!(
                            "cannot update {path:?} field on snapshot {name:?}"
                        )));
                    }
                }
            }
            rec.labels = clean_labels(std::mem::take(&mut rec.labels));
            rec.updated = Timestamp::now();
            put(&mut table, name, &rec)?;
            rec
        };
        txn.commit()?;
        Ok(rec)
    }

    /// Every snapshot, in name order.
    pub fn list(&self) -> Result<Vec<Info>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SNAPSHOTS)?;
        let mut out = Vec::with_capacity(usize::try_from(table.len()?).unwrap_or(0));
        for item in table.iter()? {
            let (k, v) = item?;
            out.push(Info {
                name: k.value().to_owned(),
                record: serde_json::from_slice(v.value())?,
            });
        }
        Ok(out)
    }

    /// Stores a layer's status document (JSON) under the snapshot name.
    pub fn put_layer(&self, name: &str, json: &[u8]) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(LAYERS)?.insert(name, json)?;
        txn.commit()?;
        Ok(())
    }

    /// Forgets a layer's status document.
    pub fn remove_layer(&self, name: &str) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(LAYERS)?.remove(name)?;
        txn.commit()?;
        Ok(())
    }

    /// Every stored layer status document, by snapshot name.
    pub fn layers(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LAYERS)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn lifecycle_follows_containerd_rules() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("m.db")).unwrap();
        let a = store
            .create(
                Kind::Active,
                "a",
                "",
                labels(&[("x", "1"), ("e", "")]),
                |_| Ok(()),
            )
            .unwrap();
        assert_eq!(a.parent_ids, Vec::<u64>::new());
        assert!(matches!(
            store.create(Kind::Active, "a", "", BTreeMap::new(), |_| Ok(())),
            Err(Error::AlreadyExists(_))
        ));
        assert!(matches!(
            store.create(Kind::Active, "b", "a", BTreeMap::new(), |_| Ok(())),
            Err(Error::InvalidArgument(_))
        ));
        store
            .commit(
                "a",
                "A",
                Usage { size: 5, inodes: 1 },
                labels(&[("y", "2")]),
            )
            .unwrap();
        let rec = store.get("A").unwrap();
        assert_eq!(rec.kind, Kind::Committed);
        assert_eq!(rec.labels, labels(&[("y", "2")]));
        assert!(matches!(store.get("a"), Err(Error::NotFound(_))));
        let b = store
            .create(Kind::Active, "b", "A", BTreeMap::new(), |_| Ok(()))
            .unwrap();
        assert_eq!(b.parent_ids, vec![a.id]);
        assert!(matches!(
            store.remove("A"),
            Err(Error::FailedPrecondition(_))
        ));
        // a failing directory step leaves nothing behind
        assert!(store
            .create(Kind::View, "v", "A", BTreeMap::new(), |_| Err(
                Error::Other("no".into())
            ))
            .is_err());
        assert!(matches!(store.get("v"), Err(Error::NotFound(_))));
        store.remove("b").unwrap();
        store.remove("A").unwrap();
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn update_paths() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("m.db")).unwrap();
        store
            .create(
                Kind::Active,
                "a",
                "",
                labels(&[("x", "1"), ("y", "2")]),
                |_| Ok(()),
            )
            .unwrap();
        let r = store
            .update("a", labels(&[("x", "9"), ("z", "3")]), &["labels.x".into()])
            .unwrap();
        assert_eq!(r.labels, labels(&[("x", "9"), ("y", "2")]));
        let r = store
            .update("a", labels(&[]), &["labels.y".into()])
            .unwrap();
        assert_eq!(r.labels, labels(&[("x", "9")]));
        let r = store.update("a", labels(&[("q", "1")]), &[]).unwrap();
        assert_eq!(r.labels, labels(&[("q", "1")]));
        assert!(matches!(
            store.update("a", labels(&[]), &["name".into()]),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn ids_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let id = {
            let store = Store::open(&path).unwrap();
            store
                .create(Kind::Active, "a", "", BTreeMap::new(), |_| Ok(()))
                .unwrap()
                .id
        };
        let store = Store::open(&path).unwrap();
        assert_eq!(store.get("a").unwrap().id, id);
        let next = store
            .create(Kind::Active, "b", "", BTreeMap::new(), |_| Ok(()))
            .unwrap();
        assert!(next.id > id);
    }
}
