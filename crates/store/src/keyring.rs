//! Data keys: created per patient compartment on first use, stored wrapped, cached unwrapped.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rand::Rng;
use rusqlite::{Connection, OptionalExtension, params};

use crate::StoreError;
use crate::keys::SealKey;

/// Unwrapped keys kept in memory; beyond this the cache is emptied and refilled on demand.
const CACHE_LIMIT: usize = 50_000;

pub(crate) struct KeyRing {
    kek: SealKey,
    cache: RwLock<HashMap<i64, Arc<SealKey>>>,
}

pub(crate) fn scope_for(patients: &[String]) -> String {
    match patients.first() {
        Some(p) => format!("patient:{p}"),
        None => "shared".to_string(),
    }
}

fn wrap_aad(scope: &str) -> Vec<u8> {
    format!("mamori/data-key/{scope}").into_bytes()
}

impl KeyRing {
    pub(crate) fn new(kek: SealKey) -> Self {
        KeyRing { kek, cache: RwLock::new(HashMap::new()) }
    }

    /// The data key of a scope, created (and stored wrapped) the first time it is needed.
    /// Runs on the writer connection so creation is part of the writing transaction.
    pub(crate) fn for_scope(&self, conn: &Connection, scope: &str) -> Result<(i64, Arc<SealKey>), StoreError> {
        let found: Option<(i64, Vec<u8>)> = conn
            .prepare_cached("SELECT key_id, wrapped FROM data_key WHERE scope = ?1")?
            .query_row([scope], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((key_id, wrapped)) = found {
            return Ok((key_id, self.unwrap_cached(key_id, scope, &wrapped)?));
        }
        let (raw, key) = SealKey::random();
        let wrapped = self.kek.seal(raw.as_ref(), &wrap_aad(scope))?;
        // Random ids: a key created in a rolled-back transaction can never alias a later one in
        // the cache (sequential ids would be reused after a rollback).
        let key_id: i64 = rand::rng().random_range(1..i64::MAX);
        conn.prepare_cached("INSERT INTO data_key (key_id, scope, wrapped) VALUES (?1, ?2, ?3)")?
            .execute(params![key_id, scope, wrapped])?;
        let key = Arc::new(key);
        self.remember(key_id, Arc::clone(&key));
        Ok((key_id, key))
    }

    /// The data key with this id, for decrypting a stored row.
    pub(crate) fn by_id(&self, conn: &Connection, key_id: i64) -> Result<Arc<SealKey>, StoreError> {
        if let Some(k) = self.cache.read().map_err(StoreError::internal)?.get(&key_id) {
            return Ok(Arc::clone(k));
        }
        let (scope, wrapped): (String, Vec<u8>) = conn
            .prepare_cached("SELECT scope, wrapped FROM data_key WHERE key_id = ?1")?
            .query_row([key_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .ok_or_else(|| StoreError::Tampered(format!("data key {key_id} is missing")))?;
        self.unwrap_cached(key_id, &scope, &wrapped)
    }

    fn unwrap_cached(&self, key_id: i64, scope: &str, wrapped: &[u8]) -> Result<Arc<SealKey>, StoreError> {
        if let Some(k) = self.cache.read().map_err(StoreError::internal)?.get(&key_id) {
            return Ok(Arc::clone(k));
        }
        let raw =
            zeroize::Zeroizing::new(self.kek.open(wrapped, &wrap_aad(scope)).ok_or_else(|| {
                StoreError::Tampered(format!("data key {key_id} does not unwrap with the master key"))
            })?);
        let raw: &[u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Tampered(format!("data key {key_id} has the wrong length")))?;
        let key = Arc::new(SealKey::new(raw));
        self.remember(key_id, Arc::clone(&key));
        Ok(key)
    }

    fn remember(&self, key_id: i64, key: Arc<SealKey>) {
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(key_id, key);
        }
    }

    /// Seals a check value so that opening the store with the wrong master key fails loudly.
    pub(crate) fn kek(&self) -> &SealKey {
        &self.kek
    }
}
