//! API keys. The secret is 256 random bits shown once; only its SHA-256 is kept.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use esaas_core::auth::{ApiKey, IssuedKey, Principal, Role};
use esaas_core::names::{ApiKeyName, TenantId};
use esaas_core::{Error, Result};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::Store;
use crate::error::db_error;

/// Prefix of every secret, so that a leaked one is easy to recognize and scan for.
pub const SECRET_PREFIX: &str = "esk_";

/// What a new key is for.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// Tenant of a tenant key.
    pub tenant: Option<TenantId>,
    /// Role.
    pub role: Role,
    /// Label.
    pub display_name: String,
}

/// Whose keys a listing covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyScope {
    /// The platform's own keys (PLATFORM_ADMIN and WORKER).
    Platform,
    /// One tenant's keys.
    Tenant(TenantId),
    /// Every tenant's keys.
    AllTenants,
}

impl KeyScope {
    /// The tenant of a one-tenant listing.
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            KeyScope::Tenant(t) => Some(t),
            KeyScope::Platform | KeyScope::AllTenants => None,
        }
    }
}

/// A page of keys: oldest first, after a keyset cursor.
#[derive(Debug, Clone)]
pub struct KeyFilter {
    /// Whose keys.
    pub scope: KeyScope,
    /// Include revoked keys.
    pub show_revoked: bool,
    /// Only keys after this `(create_time, id)`.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    /// At most this many.
    pub limit: i64,
}

/// SHA-256 of a secret.
pub fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

const COLUMNS: &str = "id, tenant_id, role, display_name, create_time, revoke_time";

fn api_key(row: &PgRow) -> Result<ApiKey> {
    let tenant: Option<String> = row.try_get("tenant_id").map_err(db_error)?;
    let role: String = row.try_get("role").map_err(db_error)?;
    Ok(ApiKey {
        name: ApiKeyName {
            tenant: tenant
                .map(|t| TenantId::parse("tenant_id", &t))
                .transpose()
                .map_err(|e| Error::Internal(e.to_string()))?,
            id: row.try_get("id").map_err(db_error)?,
        },
        role: Role::parse(&role)
            .ok_or_else(|| Error::Internal(format!("unknown role {role:?}")))?,
        display_name: row.try_get("display_name").map_err(db_error)?,
        create_time: row.try_get("create_time").map_err(db_error)?,
        revoke_time: row.try_get("revoke_time").map_err(db_error)?,
    })
}

impl Store {
    /// Creates a key and returns it with its secret.
    pub async fn create_api_key(conn: &mut PgConnection, new: &NewApiKey) -> Result<IssuedKey> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let secret = format!("{SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO api_keys (id, tenant_id, role, display_name, secret_sha256) VALUES ($1, $2, $3, $4, $5) \
             RETURNING {COLUMNS}"
        )))
        .bind(Uuid::new_v4())
        .bind(new.tenant.as_ref().map(|t| t.as_str()))
        .bind(new.role.as_str())
        .bind(&new.display_name)
        .bind(hash_secret(&secret))
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?;
        Ok(IssuedKey {
            key: api_key(&row)?,
            secret,
        })
    }

    /// Revokes a key (idempotent: a revoked key keeps its first revoke time).
    pub async fn revoke_api_key(conn: &mut PgConnection, name: &ApiKeyName) -> Result<ApiKey> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE api_keys SET revoke_time = coalesce(revoke_time, now()) \
             WHERE id = $1 AND tenant_id IS NOT DISTINCT FROM $2 RETURNING {COLUMNS}"
        )))
        .bind(name.id)
        .bind(name.tenant.as_ref().map(|t| t.as_str()))
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?
        .ok_or_else(|| Error::NotFound {
            kind: "ApiKey",
            name: name.to_string(),
        })?;
        // Every process forgets the keys it has cached, at commit.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(crate::feed::KEYS_CHANNEL)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        api_key(&row)
    }

    /// The keys `filter` selects, oldest first (never their secrets: only hashes are kept).
    pub async fn list_api_keys(&self, filter: &KeyFilter) -> Result<Vec<ApiKey>> {
        let (scope, tenant) = match &filter.scope {
            KeyScope::Platform => ("platform", None),
            KeyScope::Tenant(t) => ("tenant", Some(t.as_str())),
            KeyScope::AllTenants => ("tenants", None),
        };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM api_keys \
             WHERE CASE $1 WHEN 'platform' THEN tenant_id IS NULL \
                           WHEN 'tenant' THEN tenant_id = $2 \
                           ELSE tenant_id IS NOT NULL END \
               AND ($3 OR revoke_time IS NULL) \
               AND ($4::timestamptz IS NULL OR (create_time, id) > ($4, $5)) \
             ORDER BY create_time, id LIMIT $6"
        )))
        .bind(scope)
        .bind(tenant)
        .bind(filter.show_revoked)
        .bind(filter.after.map(|(t, _)| t))
        .bind(filter.after.map(|(_, id)| id))
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(api_key).collect()
    }

    /// The principal of a valid (not revoked) key with this secret.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Principal>> {
        if !secret.starts_with(SECRET_PREFIX) {
            return Ok(None);
        }
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM api_keys WHERE secret_sha256 = $1 AND revoke_time IS NULL"
        )))
        .bind(hash_secret(secret))
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        let Some(row) = row else { return Ok(None) };
        let key = api_key(&row)?;
        Ok(Some(Principal {
            role: key.role,
            tenant: key.name.tenant.clone(),
            key: key.name.to_string(),
        }))
    }

    /// The names of the keys revoked at or after `since` (what a process
    /// that started then must end the streams of).
    pub async fn revoked_since(&self, since: chrono::DateTime<chrono::Utc>) -> Result<Vec<String>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM api_keys WHERE revoke_time >= $1"
        )))
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| api_key(row).map(|k| k.name.to_string()))
            .collect()
    }
}
