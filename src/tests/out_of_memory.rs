#[pgrx::pg_schema]
mod tests {
    use crate::out_of_memory::{check, held, prepare};
    use pgrx::prelude::*;
    use pgrx::{pg_sys::panic::CaughtError, PgSqlErrorCode};

    /// Runs `work` with this backend's address space capped at what it maps now plus `headroom` bytes.
    fn with_address_space_cap(headroom: usize, work: impl FnOnce()) {
        let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: usize = statm.split_whitespace().next().unwrap().parse().unwrap();
        // SAFETY: getrlimit and setrlimit read and write the structs they are given.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_AS, &mut old), 0);
            let cap = libc::rlimit { rlim_cur: (pages * 4096 + headroom) as libc::rlim_t, rlim_max: old.rlim_max };
            assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &cap), 0);
        }
        work();
        // SAFETY: as above; the old limit is at most the hard limit, which did not change.
        unsafe { assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &old), 0) };
    }

    /// The message of the 53200 that `work` raises, if it raises one.
    fn out_of_memory_error(work: impl FnOnce() + std::panic::UnwindSafe) -> Option<String> {
        PgTryBuilder::new(|| {
            work();
            None
        })
        .catch_when(PgSqlErrorCode::ERRCODE_OUT_OF_MEMORY, |e| match e {
            CaughtError::ErrorReport(report) | CaughtError::PostgresError(report) => Some(report.message().to_string()),
            CaughtError::RustPanic { .. } => None,
        })
        .execute()
    }

    #[pg_test]
    fn a_failed_allocation_spends_the_reserve_and_the_call_stops_with_53200() {
        prepare();
        assert!(held());
        with_address_space_cap(16 << 20, || {
            // Beyond the cap, within the cap and the reserve: served once the reserve is given back.
            let block: Vec<u8> = Vec::with_capacity(48 << 20);
            assert_eq!(std::hint::black_box(block).capacity(), 48 << 20);
        });
        assert!(!held());
        assert_eq!(
            out_of_memory_error(check).as_deref(),
            Some("pg_ai ran out of memory during this call, which was stopped")
        );
        // The next call takes the reserve again and goes on.
        prepare();
        assert!(held());
        assert_eq!(out_of_memory_error(check), None);
        assert_eq!(Spi::get_one::<i32>("SELECT 1").unwrap(), Some(1));
    }

    #[pg_test]
    fn a_call_is_refused_up_front_while_the_reserve_cannot_be_mapped() {
        prepare();
        with_address_space_cap(16 << 20, || {
            let block: Vec<u8> = Vec::with_capacity(48 << 20);
            std::hint::black_box(&block);
            // Spent, and the block still holds the memory: the reserve cannot come back.
            assert_eq!(
                out_of_memory_error(prepare).as_deref(),
                Some("pg_ai cannot map the memory it keeps in reserve: the server is out of memory")
            );
        });
        prepare();
        assert!(held());
    }

    /// Asks for far more than the address space left under a cap, the reserve included: the allocation fails
    /// for good and Rust aborts.
    #[pg_extern]
    fn allocate_beyond_the_reserve() -> i64 {
        prepare();
        let mut length = 0;
        with_address_space_cap(16 << 20, || {
            let block: Vec<u8> = Vec::with_capacity(1 << 30);
            length = std::hint::black_box(block).capacity() as i64;
        });
        length
    }

    #[pg_test]
    fn an_allocation_beyond_the_reserve_ends_its_session_with_fatal_53200_and_no_other() {
        Spi::run("CREATE EXTENSION IF NOT EXISTS dblink").unwrap();
        let started = Spi::get_one::<String>("SELECT pg_postmaster_start_time()::text").unwrap();
        // Another session of the same server, through dblink, allocates; this one watches.
        let connection = Spi::get_one::<String>(
            "SELECT format('dbname=%s port=%s host=%s', current_database(), current_setting('port'),
                           split_part(current_setting('unix_socket_directories'), ',', 1))",
        )
        .unwrap()
        .unwrap();
        let query = format!(
            "SELECT * FROM dblink({}, 'SELECT tests.allocate_beyond_the_reserve()') AS t(length bigint)",
            pgrx::spi::quote_literal(&connection)
        );
        let failure = PgTryBuilder::new(|| {
            Spi::run(&query).unwrap();
            None
        })
        .catch_others(|e| match e {
            CaughtError::ErrorReport(r) | CaughtError::PostgresError(r) => {
                Some(format!("{} {}", r.message(), r.detail().unwrap_or_default()))
            }
            CaughtError::RustPanic { ereport, .. } => Some(ereport.message().to_string()),
        })
        .execute()
        .expect("the allocation succeeded");
        assert!(failure.contains("pg_ai could not allocate 1.0 GB and ended this session"), "{failure}");
        // No reset: this session goes on, and the postmaster did not restart the others.
        assert_eq!(Spi::get_one::<String>("SELECT pg_postmaster_start_time()::text").unwrap(), started);
        assert_eq!(Spi::get_one::<i32>("SELECT 1").unwrap(), Some(1));
    }
}
