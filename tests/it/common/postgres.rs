//! PostgreSQL for the integration tests: a fresh database on the test binary's throwaway
//! cluster (`seedvault::store::pg_cluster`: one cluster per process, stopped when it ends).

use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use seedvault::store::pg_cluster::{self, Cluster};

/// An empty database of its own.
pub struct Database {
    pub name: String,
}

impl Database {
    pub async fn fresh() -> Self {
        let name = pg_cluster::fresh_database_name()
            .await
            .unwrap_or_else(|e| panic!("no test PostgreSQL: {e}"));
        Self { name }
    }

    /// The URL with the password in it.
    pub fn url(&self) -> String {
        cluster().url(&self.name)
    }

    /// The URL without a password (as an administrator should write it).
    pub fn url_without_password(&self) -> String {
        cluster().url_without_password(&self.name)
    }

    /// A file holding the password, as `database_password_file` names it.
    pub fn password_file(dir: &Path) -> PathBuf {
        let file = dir.join("database-password");
        std::fs::write(&file, format!("{}\n", Cluster::PASSWORD)).unwrap();
        file
    }

    /// A pool on the database, for checking what landed there.
    pub async fn pool(&self) -> sqlx::PgPool {
        let options = sqlx::postgres::PgConnectOptions::from_str(&self.url()).unwrap();
        sqlx::PgPool::connect_with(options).await.unwrap()
    }
}

fn cluster() -> &'static Cluster {
    pg_cluster::cluster().unwrap_or_else(|e| panic!("no test PostgreSQL: {e}"))
}
