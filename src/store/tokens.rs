//! `tokens`: token metadata, lifecycle state and the nullable sealed seed.

use sqlx::SqliteExecutor;

use super::StoreError;

/// Number of tokens in each state, for `status` and the dashboard.
pub async fn count_by_state(db: impl SqliteExecutor<'_>) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(
        sqlx::query_as("SELECT state, COUNT(*) FROM tokens GROUP BY state ORDER BY state")
            .fetch_all(db)
            .await?,
    )
}
