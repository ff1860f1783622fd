//! Criterion benchmark of the reference interpreter (filled in by the interpreter work).
fn main() {}
