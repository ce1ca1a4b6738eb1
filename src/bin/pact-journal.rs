fn main() {
    eprintln!("pact-journal: under construction");
    std::process::exit(1);
}
