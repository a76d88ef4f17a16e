//! A fresh PostgreSQL database for one test, dropped when the test ends (passed or not).
//!
//! The server is the machine's (`PAYMUX_TEST_POSTGRES_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/postgres`); `scripts/test.sh` and `.ci/run` start it when
//! it is down. A test that needs it fails, with how to start it, when it cannot be reached.

use sqlx::Connection;

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn admin_url() -> String {
    std::env::var("PAYMUX_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// The database's URL with its name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let server = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

/// One test's database.
#[derive(Debug)]
pub struct PgDatabase {
    pub url: String,
    name: String,
}

/// `host:port` of a `postgres://user@host:port/db` URL.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

impl PgDatabase {
    /// `host:port` of the PostgreSQL server.
    pub fn server_addr(&self) -> String {
        authority(&self.url).to_owned()
    }

    /// This database's URL reached at `addr` (`host:port`) instead of the server's own address,
    /// for a proxy in between.
    pub fn url_through(&self, addr: &str) -> String {
        self.url.replacen(authority(&self.url), addr, 1)
    }

    pub async fn create() -> Self {
        let admin = admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {admin} ({e}). Start it with `pg_ctlcluster \
                 --skip-systemctl-redirect $(ls /etc/postgresql) main start` (scripts/test.sh does), \
                 or point PAYMUX_TEST_POSTGRES_URL at one"
            )
        });
        // Hex digits after a fixed prefix: safe to put in the statement as it is.
        let name = format!("paymux_e2e_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.ok();
        Self { url: with_database(&admin, &name), name }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Drop runs outside any runtime we may block: a thread of its own with its own runtime.
        let admin = admin_url();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("could not drop the test database {}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_name_is_replaced_and_the_options_kept() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u@h:1/db?sslmode=disable", "t2"),
            "postgres://u@h:1/t2?sslmode=disable"
        );
    }

    #[test]
    fn the_server_address_is_read_from_the_url() {
        assert_eq!(super::authority("postgres://postgres@127.0.0.1:5432/db"), "127.0.0.1:5432");
        assert_eq!(super::authority("postgres://h:1/db?x=y"), "h:1");
    }
}
