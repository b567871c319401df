#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn catalog_starts_empty() {
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM ai.models").unwrap(),
            Some(0)
        );
    }
}
