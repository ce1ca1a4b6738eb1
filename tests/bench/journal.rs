//! `make bench` (journal part): under construction.
fn main() {
    println!("journal benchmarks: not written yet");
}
