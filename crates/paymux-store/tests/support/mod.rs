//! Where the store tests run: SQLite on a temporary file, PostgreSQL on a database made for the
//! one test and dropped after it, even when the test panics.
//!
//! PostgreSQL is found at `PAYMUX_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); the user must be allowed to create databases.
//! A PostgreSQL test fails, never skips, when the server cannot be reached.

#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::future::Future;
use std::sync::Arc;

use paymux_store::Store;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("t.db");
    let store = paymux_store::open(path.to_str().expect("a UTF-8 path")).await.expect("SQLite");
    test(store).await;
}

pub async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    on_postgres_database(|url| async move {
        let store = paymux_store::open(&url).await.expect("a PgStore on the fresh database");
        test(store).await;
    })
    .await
}

/// Runs `test` with the URL of a fresh, empty database, dropped afterwards whatever the test did.
pub async fn on_postgres_database<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let server = std::env::var("PAYMUX_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.into());
    let name = format!("paymux_t_{}", uuid::Uuid::now_v7().simple());
    let mut admin = PgConnection::connect(&server).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {server} ({e}). Start it with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
             (scripts/test.sh does this), or point PAYMUX_TEST_POSTGRES_URL at a server"
        )
    });
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("CREATE DATABASE");
    // On a task of its own, so that a panic comes back here as a value and the database is
    // dropped before the panic goes on.
    let outcome = tokio::spawn(test(with_database(&server, &name))).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)")))
        .execute(&mut admin)
        .await
        .expect("DROP DATABASE");
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("the test did not finish: {e}"),
        }
    }
}

/// `url` with its database replaced by `database` (the query string, if any, kept).
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end =
        base[authority_start..].find('/').map_or(base.len(), |i| authority_start + i);
    format!("{}/{database}{query}", &base[..authority_end])
}
