//! One helper runs every change in a transaction, with AIP-155 idempotency
//! and AIP-163 `validate_only` handled the same way for all of them.

use esaas_core::{Error, Result};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::Store;
use crate::error::db_error;

/// The identity of an idempotent request.
#[derive(Debug, Clone)]
pub struct Idempotency {
    /// Who may replay it: a tenant id, or `platform`.
    pub scope: String,
    /// The RPC, for example `CreateCluster`.
    pub method: &'static str,
    /// The caller's request id.
    pub request_id: Uuid,
    /// Hash of the request without its request id.
    pub request_hash: Vec<u8>,
}

/// How to run a change.
#[derive(Debug, Clone, Default)]
pub struct Mode {
    /// Run every check and every write, then roll back.
    pub validate_only: bool,
    /// Make the change idempotent under this key.
    pub idempotency: Option<Idempotency>,
}

/// What a change returned.
#[derive(Debug)]
pub enum Outcome<T> {
    /// The change ran now (committed, or rolled back under `validate_only`).
    Fresh(T),
    /// The request id was seen before: the encoded first answer.
    Replayed(Vec<u8>),
}

impl Store {
    /// Runs `work` in one transaction: commit on `Ok`, roll back on `Err` or
    /// under `validate_only`. With an idempotency key, a previous answer to
    /// the same request is returned instead, and the new answer (`encode`d)
    /// is stored in the same transaction as the change it describes.
    pub async fn run<T>(
        &self,
        mode: &Mode,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T>,
        encode: impl FnOnce(&T) -> Vec<u8>,
    ) -> Result<Outcome<T>> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let idem = mode.idempotency.as_ref().filter(|_| !mode.validate_only);
        if let Some(idem) = idem {
            // Two retries of one request arrive together: the second waits
            // here for the first to commit, then replays its answer.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(format!(
                    "{}/{}/{}",
                    idem.scope, idem.method, idem.request_id
                ))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            let row = sqlx::query(
                "SELECT request_hash, response FROM idempotency WHERE scope = $1 AND method = $2 AND request_id = $3",
            )
            .bind(&idem.scope)
            .bind(idem.method)
            .bind(idem.request_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
            if let Some(row) = row {
                let hash: Vec<u8> = row.try_get("request_hash").map_err(db_error)?;
                if hash != idem.request_hash {
                    return Err(Error::RequestIdReused {
                        request_id: idem.request_id.to_string(),
                    });
                }
                return Ok(Outcome::Replayed(
                    row.try_get("response").map_err(db_error)?,
                ));
            }
        }
        let value = work(&mut tx).await?;
        if mode.validate_only {
            tx.rollback().await.map_err(db_error)?;
            return Ok(Outcome::Fresh(value));
        }
        if let Some(idem) = idem {
            sqlx::query(
                "INSERT INTO idempotency (scope, method, request_id, request_hash, response) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&idem.scope)
            .bind(idem.method)
            .bind(idem.request_id)
            .bind(&idem.request_hash)
            .bind(encode(&value))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(Outcome::Fresh(value))
    }

    /// Runs a read-only `work` on a pooled connection.
    pub(crate) async fn read<T>(
        &self,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        work(&mut conn).await
    }
}
