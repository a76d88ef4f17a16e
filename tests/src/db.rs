//! Direct SQL on the gateway's store, for tests that set up what only time, a crash or an old
//! defect could leave behind, and read what the API does not show. The same statement runs on
//! either backend: it is written with `?` placeholders, numbered `$1, $2, ...` for PostgreSQL.

use sqlx::Row;

/// One bound value.
#[derive(Debug, Clone)]
pub enum Arg {
    Int(i64),
    Text(String),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(v.to_owned())
    }
}

impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(v.clone())
    }
}

/// A connection pool on the test's store.
#[derive(Debug)]
pub enum TestDb {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// `?` placeholders as `$1, $2, ...` (the statements here hold no `?` inside strings).
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

macro_rules! bind_all {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                Arg::Int(v) => q.bind(*v),
                Arg::Text(v) => q.bind(v.clone()),
            };
        }
        q
    }};
}

impl TestDb {
    pub async fn connect(url: &str) -> Self {
        if url.starts_with("postgres") {
            TestDb::Postgres(sqlx::PgPool::connect(url).await.unwrap())
        } else {
            TestDb::Sqlite(sqlx::SqlitePool::connect(url).await.unwrap())
        }
    }

    /// Runs a statement; returns the rows it changed.
    pub async fn execute(&self, sql: &str, args: &[Arg]) -> u64 {
        match self {
            TestDb::Sqlite(p) => bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())), args)
                .execute(p)
                .await
                .unwrap()
                .rows_affected(),
            TestDb::Postgres(p) => bind_all!(sqlx::query(sqlx::AssertSqlSafe(numbered(sql))), args)
                .execute(p)
                .await
                .unwrap()
                .rows_affected(),
        }
    }

    /// The first column of the first row as an integer, if there is a row.
    pub async fn fetch_i64(&self, sql: &str, args: &[Arg]) -> Option<i64> {
        match self {
            TestDb::Sqlite(p) => bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())), args)
                .fetch_optional(p)
                .await
                .unwrap()
                .map(|r| r.get::<i64, _>(0)),
            TestDb::Postgres(p) => bind_all!(sqlx::query(sqlx::AssertSqlSafe(numbered(sql))), args)
                .fetch_optional(p)
                .await
                .unwrap()
                .map(|r| r.get::<i64, _>(0)),
        }
    }

    /// The first column of the first row as a boolean, if there is a row and it is not NULL.
    pub async fn fetch_bool(&self, sql: &str, args: &[Arg]) -> Option<bool> {
        match self {
            TestDb::Sqlite(p) => bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())), args)
                .fetch_optional(p)
                .await
                .unwrap()
                .and_then(|r| r.get::<Option<bool>, _>(0)),
            TestDb::Postgres(p) => bind_all!(sqlx::query(sqlx::AssertSqlSafe(numbered(sql))), args)
                .fetch_optional(p)
                .await
                .unwrap()
                .and_then(|r| r.get::<Option<bool>, _>(0)),
        }
    }

    pub async fn close(self) {
        match self {
            TestDb::Sqlite(p) => p.close().await,
            TestDb::Postgres(p) => p.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_are_numbered_in_order() {
        assert_eq!(
            super::numbered("UPDATE t SET a = ? WHERE id = ? AND b > ?"),
            "UPDATE t SET a = $1 WHERE id = $2 AND b > $3"
        );
    }
}
