//! Injected faults: the next calls of a name fail with a given error.

use esaas_core::backend::{StepError, StepResult};
use sqlx::Row;

use super::{Sim, db};

impl Sim {
    /// Makes the next `times` calls named `call` (all clusters) fail with
    /// `reason: message`; `times = -1` means every call until
    /// [`Sim::clear_faults`]. Call names: `nodegroup.ensure`,
    /// `nodegroup.delete`, `nodegroup.observe`, `workloads.apply_base`,
    /// `workloads.apply_node_set`, `workloads.roll`, `workloads.delete_node_set`,
    /// `workloads.delete_base`, `workloads.observe`, `es.health`, `es.exclude`,
    /// `es.include`.
    ///
    /// Panics when the database fails: this is for test set-up.
    pub async fn inject(
        &self,
        call: &str,
        times: i32,
        retryable: bool,
        reason: &str,
        message: &str,
    ) {
        sqlx::query(
            "INSERT INTO sim_faults (call, remaining, retryable, reason, message)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(call)
        .bind(times)
        .bind(retryable)
        .bind(reason)
        .bind(message)
        .execute(&self.pool)
        .await
        .expect("insert sim_faults");
    }

    /// Removes every injected fault.
    pub async fn clear_faults(&self) {
        sqlx::query("DELETE FROM sim_faults")
            .execute(&self.pool)
            .await
            .expect("clear sim_faults");
    }

    /// Takes one use of an injected fault for `call`, if there is one.
    pub(super) async fn take_fault(&self, call: &str) -> StepResult<Option<StepError>> {
        let row = sqlx::query(
            "UPDATE sim_faults
                SET remaining = CASE WHEN remaining < 0 THEN remaining ELSE remaining - 1 END
              WHERE id = (SELECT id FROM sim_faults WHERE call = $1 AND remaining <> 0
                           ORDER BY id LIMIT 1 FOR UPDATE)
             RETURNING retryable, reason, message",
        )
        .bind(call)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(row.map(|r| StepError {
            retryable: r.get("retryable"),
            reason: r.get("reason"),
            message: r.get("message"),
        }))
    }

    /// The start of an observing call: its fault, if any.
    pub(super) async fn check(&self, call: &str) -> StepResult<()> {
        match self.take_fault(call).await? {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
