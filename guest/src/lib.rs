//! The agros-sync plugin: pushes local records to Parse Server and reads them
//! back, compiled to a `wasm32-wasip2` component.
//!
//! The host calls the `sync-manager` export ([`sync_manager`]). Each call goes
//! through the same roles the platform's team uses:
//!
//! - [`client_factory::ParseClientFactory`] keeps one [`parse_client::ParseClient`]
//!   per database key, created on first use.
//! - [`parser_service::ParserService`] checks a server before its client is
//!   used (health, version, custom objectIds, class schemas) and records the
//!   findings in `app_config`.
//! - [`encode`] turns the caller's JSON into what Parse expects, and
//!   [`validate`] rejects bad class and field names before any request.
//!
//! Trust boundary: the plugin never sees a Parse key. It sends requests to the
//! server URLs in its configuration, and the host's HTTP capability adds the
//! keys or denies the request.

mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin",
    });
}

pub mod client_factory;
pub mod db_state;
pub mod encode;
pub mod errors;
pub mod flusher;
pub mod http;
pub mod ids;
pub mod iso_date;
pub mod log;
pub mod parse_client;
pub mod parser_service;
pub mod query;
pub mod sync_manager;
pub mod validate;

struct Component;

// Exported only in the component: on the host target the unit tests build the
// crate as a native library, whose linker rejects the WIT export names.
#[cfg(target_arch = "wasm32")]
bindings::export!(Component with_types_in bindings);
