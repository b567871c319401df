//! Catalog reads through SPI in read-only mode.
//!
//! pgrx runs SPI read-write as soon as the transaction has an xid, and read-write SPI advances the command
//! counter, which PostgreSQL forbids in parallel mode: a parallel `CREATE TABLE ... AS SELECT ai_embed(...)`
//! failed with "cannot start commands during a parallel operation". These reads never write, so they ask
//! SPI for read-only execution themselves. Rows come through a cursor a few at a time, so reading a model's
//! stored files never holds more than a few chunks.

use pgrx::pg_sys;
use pgrx::{FromDatum, IntoDatum};
use std::ffi::CString;

/// Rows fetched per round trip to the cursor.
const FETCH: std::ffi::c_long = 4;

/// One row of a result, valid while the callback runs.
pub struct Row {
    tuple: pg_sys::HeapTuple,
    desc: pg_sys::TupleDesc,
}

impl Row {
    /// The value of 1-based `column`; None for NULL.
    pub fn get<T: FromDatum>(&self, column: i32) -> Option<T> {
        let mut is_null = false;
        // SAFETY: tuple and desc come from the current SPI tuple table, alive during the callback.
        unsafe {
            let datum = pg_sys::SPI_getbinval(self.tuple, self.desc, column, &mut is_null);
            T::from_datum(datum, is_null)
        }
    }
}

/// Runs `query` with text parameters `args` read-only and calls `f` for each row, in order.
pub fn for_each_row(query: &str, args: &[&str], mut f: impl FnMut(&Row)) {
    let query = CString::new(query).expect("queries have no NUL");
    let mut types: Vec<pg_sys::Oid> = vec![pg_sys::TEXTOID; args.len()];
    let mut values: Vec<pg_sys::Datum> = args.iter().map(|a| a.into_datum().expect("a text datum")).collect();
    let nulls: Vec<std::ffi::c_char> = vec![b' ' as std::ffi::c_char; args.len()];
    // On Citus the catalog's tables are reference tables, which a worker's shard query may read (store::citus).
    // SAFETY: standard SPI protocol; errors raised inside are Postgres ERRORs that abort the transaction,
    // which also closes the SPI connection and the portal.
    super::citus::reading_catalog(|| unsafe {
        pg_sys::SPI_connect();
        let portal = pg_sys::SPI_cursor_open_with_args(
            std::ptr::null(),
            query.as_ptr(),
            args.len() as i32,
            types.as_mut_ptr(),
            values.as_mut_ptr(),
            nulls.as_ptr(),
            true,
            0,
        );
        loop {
            pg_sys::SPI_cursor_fetch(portal, true, FETCH);
            let table = pg_sys::SPI_tuptable;
            let rows = pg_sys::SPI_processed as usize;
            if table.is_null() || rows == 0 {
                break;
            }
            for i in 0..rows {
                f(&Row { tuple: *(*table).vals.add(i), desc: (*table).tupdesc });
            }
            pg_sys::SPI_freetuptable(table);
        }
        pg_sys::SPI_cursor_close(portal);
        pg_sys::SPI_finish();
    })
}
