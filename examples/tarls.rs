//! Lists the entries of tar files as ocikit's layer reader sees them
//! (`cargo run --example tarls -- FILE...`); used to review corpus verdicts.
use std::io::Read;

fn main() {
    for p in std::env::args().skip(1) {
        let mut head = [0u8; 8];
        let n = std::fs::File::open(&p)
            .and_then(|mut f| f.read(&mut head))
            .unwrap_or(0);
        let c =
            ocikit::spec::Compression::sniff(&head[..n]).unwrap_or(ocikit::spec::Compression::None);
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        let f = match std::fs::File::open(&p) {
            Ok(f) => f,
            Err(e) => {
                println!("{p}: {e}");
                continue;
            }
        };
        match ocikit::image::list_entries(f, c, len) {
            Ok(v) => {
                println!("{p}: ok {} entries", v.len());
                for e in v {
                    println!("    {:?} {:?} {} {}", e.name, e.kind, e.size, e.link);
                }
            }
            Err(e) => println!("{p}: ERR {e}"),
        }
    }
}
