//! The OpenAPI schemas derived in this crate (`utoipa::ToSchema`) read `Timestamp`, the
//! domain's alias, as what it is: a chrono UTC date-time (serialized as RFC 3339).
fn main() {
    utoipa_config::Config::new()
        .alias_for("Timestamp", "chrono::DateTime<chrono::Utc>")
        .write_to_file();
}
