//! jsonb arguments (training options, chat messages) read as text and parsed by pg_ai. pgrx's `JsonB` panics
//! (XX000, with serde's message) on values serde_json cannot hold, such as the number 1e309, which jsonb accepts;
//! here that is a 22023 error that names the argument.

use crate::engine::error::AiError;
use pgrx::callconv::{Arg, ArgAbi};
use pgrx::{pg_sys, FromDatum};

pub struct JsonArg(Result<serde_json::Value, String>);

impl JsonArg {
    /// The value; a jsonb document serde_json cannot read is an ERROR naming `argument`.
    pub fn value(self, argument: &str) -> serde_json::Value {
        self.0.unwrap_or_else(|e| {
            crate::error::raise(
                AiError::invalid(format!("{argument} cannot be read: {e}"))
                    .with_hint("Numbers must fit in a double precision float."),
            )
        })
    }
}

impl FromDatum for JsonArg {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<JsonArg> {
        if is_null {
            return None;
        }
        // SAFETY: the datum is a jsonb (the argument's SQL type); jsonb_out detoasts it and returns a palloc'd
        // C string, freed once copied.
        unsafe {
            let text = pgrx::direct_function_call::<&std::ffi::CStr>(pg_sys::jsonb_out, &[Some(datum)])?;
            // serde's "at line 1 column N" counts in jsonb's own rewriting of the text, not the caller's.
            let parsed = match text.to_str() {
                Ok(s) => serde_json::from_str(s).map_err(|e| {
                    let message = e.to_string();
                    message.split(" at line ").next().unwrap_or(&message).to_string()
                }),
                Err(e) => Err(e.to_string()),
            };
            pg_sys::pfree(text.as_ptr() as *mut std::ffi::c_void);
            Some(JsonArg(parsed))
        }
    }
}

// SAFETY: unboxed with FromDatum, as pgrx does for its own JsonB; NULL comes through Option.
unsafe impl<'fcx> ArgAbi<'fcx> for JsonArg {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or_else(|| panic!("argument {index} must not be null"))
    }
}

pgrx::impl_sql_translatable!(JsonArg, arg_only = "jsonb");
