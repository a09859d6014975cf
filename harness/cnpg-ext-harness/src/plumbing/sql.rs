//! SQL through tokio-postgres, with every value as PostgreSQL's text output.

use tokio_postgres::{Client, SimpleQueryMessage};

pub(crate) type Rows = Vec<Vec<Option<String>>>;

/// Runs `query` (one or more statements) and returns the rows of the last result set.
pub(crate) async fn query_text(client: &Client, query: &str) -> Result<Rows, tokio_postgres::Error> {
    let mut rows = Vec::new();
    for msg in client.simple_query(query).await? {
        match msg {
            SimpleQueryMessage::Row(row) => {
                rows.push((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect());
            }
            SimpleQueryMessage::CommandComplete(_) => {}
            SimpleQueryMessage::RowDescription(_) => rows.clear(),
            _ => {}
        }
    }
    Ok(rows)
}

/// The server's message (with detail) when there is one, else the client error.
pub(crate) fn describe_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}: {}", db.severity(), db.message());
            if let Some(d) = db.detail() {
                s += &format!(" (detail: {d})");
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s += &format!(": {inner}");
                src = inner.source();
            }
            s
        }
    }
}

/// Rows rendered one per line, for expected-vs-actual messages.
pub(crate) fn render_rows(rows: &Rows) -> String {
    if rows.is_empty() {
        return "(no rows)".into();
    }
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r.iter().map(|c| c.clone().unwrap_or_else(|| "NULL".into())).collect();
            format!("[{}]", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `"ident"` with embedded quotes doubled.
pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `'literal'` with embedded quotes doubled.
pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
