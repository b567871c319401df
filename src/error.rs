//! Raising engine errors as Postgres errors with a SQLSTATE and a hint.

use crate::engine::error::{AiError, ErrorKind};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

fn sqlstate(kind: ErrorKind) -> PgSqlErrorCode {
    match kind {
        ErrorKind::InvalidParameter => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        ErrorKind::UndefinedModel => PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        ErrorKind::Duplicate => PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
        ErrorKind::WrongTask => PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
        ErrorKind::MissingFile => PgSqlErrorCode::ERRCODE_UNDEFINED_FILE,
        ErrorKind::CorruptFile => PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
        ErrorKind::Privilege => PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        ErrorKind::Internal => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        ErrorKind::Cancelled => PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
        ErrorKind::Unsupported => PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        ErrorKind::System => PgSqlErrorCode::ERRCODE_SYSTEM_ERROR,
        ErrorKind::OutOfMemory => PgSqlErrorCode::ERRCODE_OUT_OF_MEMORY,
    }
}

/// Raises `e` as an ERROR; does not return.
pub fn raise(e: AiError) -> ! {
    let mut report = ErrorReport::new(sqlstate(e.kind), e.message, "pg_ai");
    if let Some(hint) = e.hint {
        report = report.set_hint(hint);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

pub trait OrRaise<T> {
    /// The value, or the error raised as a Postgres ERROR.
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T, AiError> {
    fn or_raise(self) -> T {
        self.unwrap_or_else(|e| raise(e))
    }
}

/// Raises the ERROR that a query cancel, statement_timeout or a failed allocation (crate::out_of_memory) calls
/// for; long work calls it between batches, tokens and steps.
pub fn check_interrupts() {
    pgrx::check_for_interrupts!();
    crate::out_of_memory::check();
}
