//! The manifest parser: any bytes give a manifest that passes its own checks or an
//! InvalidCorpus error, never a panic; an accepted manifest survives a round trip.
#![no_main]

use cellarrow::corpus::Manifest;
use cellarrow::ErrorKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Manifest::from_json_bytes(data) {
        Ok(m) => {
            m.check().expect("an accepted manifest passes check()");
            let text = serde_json::to_vec(&m).expect("serialises");
            let again = Manifest::from_json_bytes(&text).expect("round trip parses");
            assert_eq!(again, m);
        }
        Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidCorpus, "{e}"),
    }
});
