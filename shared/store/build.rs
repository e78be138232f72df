//! Build script: re-embed migrations when they change.
// Embedded migrations must be re-read when a file in migrations/ changes.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
