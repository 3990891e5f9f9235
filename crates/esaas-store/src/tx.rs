//! One helper runs every change in a transaction ([`Store::transaction`]);
//! [`Store::run`] adds AIP-155 idempotency and AIP-163 `validate_only` on top,
//! the same way for every mutating call.

use esaas_core::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::Store;
use crate::error::db_error;

/// The identity of an idempotent request.
#[derive(Debug, Clone)]
pub struct Idempotency {
    /// Who may replay it: `tenants/{tenant}`, or `platform`.
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
#[derive(Debug, PartialEq)]
pub enum Outcome<T> {
    /// The change ran now (committed, or rolled back under `validate_only`).
    Fresh(T),
    /// The request id was seen before: the first answer, as it was stored.
    Replayed(T),
}

impl<T> Outcome<T> {
    /// The answer, fresh or replayed.
    pub fn into_inner(self) -> T {
        match self {
            Outcome::Fresh(t) | Outcome::Replayed(t) => t,
        }
    }
}

impl Store {
    /// Runs `work` in one transaction: commit on `Ok`, roll back on `Err`.
    pub async fn transaction<T>(
        &self,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T>,
    ) -> Result<T> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let value = work(&mut tx).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(value)
    }

    /// Runs `work` in one transaction: commit on `Ok`, roll back on `Err` or
    /// under `validate_only`. With an idempotency key, the answer to an earlier
    /// request with the same id is returned instead, and a new answer is
    /// stored (as JSON, in the same transaction as the change it describes).
    /// What an answer must not keep (a secret) its type leaves out when it
    /// is serialized.
    pub async fn run<T: Serialize + DeserializeOwned>(
        &self,
        mode: &Mode,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T>,
    ) -> Result<Outcome<T>> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let idem = mode.idempotency.as_ref().filter(|_| !mode.validate_only);
        if let Some(idem) = idem
            && let Some(answer) = replay(&mut tx, idem).await?
        {
            return Ok(Outcome::Replayed(answer));
        }
        let value = work(&mut tx).await?;
        if mode.validate_only {
            tx.rollback().await.map_err(db_error)?;
            return Ok(Outcome::Fresh(value));
        }
        if let Some(idem) = idem {
            let answer = serde_json::to_value(&value).map_err(|e| {
                Error::Internal(format!("encoding the answer of {}: {e}", idem.method))
            })?;
            sqlx::query(
                "INSERT INTO idempotency (scope, method, request_id, request_hash, answer) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&idem.scope)
            .bind(idem.method)
            .bind(idem.request_id)
            .bind(&idem.request_hash)
            .bind(answer)
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

/// The stored answer to `idem`'s request, if it was answered before.
async fn replay<T: DeserializeOwned>(
    tx: &mut PgConnection,
    idem: &Idempotency,
) -> Result<Option<T>> {
    // Two retries of one request arrive together: the second waits here for
    // the first to commit, then replays its answer.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!(
            "{}/{}/{}",
            idem.scope, idem.method, idem.request_id
        ))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    let row = sqlx::query(
        "SELECT request_hash, answer FROM idempotency WHERE scope = $1 AND method = $2 AND request_id = $3",
    )
    .bind(&idem.scope)
    .bind(idem.method)
    .bind(idem.request_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_error)?;
    let Some(row) = row else { return Ok(None) };
    let hash: Vec<u8> = row.try_get("request_hash").map_err(db_error)?;
    if hash != idem.request_hash {
        return Err(Error::RequestIdReused {
            request_id: idem.request_id.to_string(),
        });
    }
    let answer: Option<serde_json::Value> = row.try_get("answer").map_err(db_error)?;
    let Some(answer) = answer else {
        // Answered by a version of the service that stored the encoded
        // response instead; its answer cannot be read back here.
        return Err(Error::precondition(
            format!("request_id {}", idem.request_id),
            "this request was answered by an earlier version of the service, whose answer cannot be replayed; \
             read the resource to see its state, or send the request again with a new request_id",
        ));
    };
    serde_json::from_value(answer)
        .map(Some)
        .map_err(|e| Error::Internal(format!("stored answer of {}: {e}", idem.method)))
}
