//! Unit tests of the store layer that need no server: URL parsing, request planning, the
//! cache, and ranged reads through a local store.

use std::io::Read;

use super::*;
use crate::error::ErrorKind;

fn sha(byte: u8) -> String {
    format!("{byte:02x}").repeat(32)
}

#[test]
fn parses_urls_and_paths() {
    let opts = StoreOptions::isolated()
        .with("aws_access_key_id", "k")
        .with("aws_secret_access_key", "s")
        .with("aws_endpoint", "http://127.0.0.1:9")
        .with("aws_allow_http", "true");
    let loc = Location::parse_with("s3://bucket/a/b/", &opts).unwrap();
    assert_eq!(loc.scheme(), Scheme::S3);
    assert_eq!(loc.prefix().as_ref(), "a/b");
    assert_eq!(
        loc.child("matrix/part-00000.arrow").as_ref(),
        "a/b/matrix/part-00000.arrow"
    );
    assert_eq!(loc.url_of("manifest.json"), "s3://bucket/a/b/manifest.json");
    assert_eq!(loc.base_url(), "s3://bucket");

    let dir = tempfile::tempdir().unwrap();
    let local = Location::parse(dir.path().to_str().unwrap()).unwrap();
    assert_eq!(local.scheme(), Scheme::Local);
    assert_eq!(local.local_root(), Some(dir.path()));
    let file = Location::parse(&format!("file://{}", dir.path().display())).unwrap();
    assert_eq!(file.local_root(), Some(dir.path()));

    // Keys of another store are refused (an S3 key for an HTTP URL is a mistake).
    assert!(Location::parse_with("http://127.0.0.1:9/corpora/x", &opts).is_err());
    let http =
        Location::parse_with("http://127.0.0.1:9/corpora/x", &StoreOptions::isolated()).unwrap();
    assert_eq!(http.scheme(), Scheme::Http);
    assert_eq!(
        http.url_of("manifest.json"),
        "http://127.0.0.1:9/corpora/x/manifest.json"
    );
}

#[test]
fn bad_urls_are_named() {
    let opts = StoreOptions::isolated();
    for (url, kind, needle) in [
        (
            "ftp://host/x",
            ErrorKind::InvalidUrl,
            "unsupported URL scheme",
        ),
        ("s3:///prefix", ErrorKind::InvalidUrl, "names no bucket"),
        ("file://relative/x", ErrorKind::InvalidUrl, "absolute path"),
        ("s3://bucket/x", ErrorKind::Credentials, "no credentials"),
    ] {
        // No credentials: no keys and no instance metadata service.
        let o = opts.clone().with("aws_ec2_metadata_disabled", "true");
        let e = Location::parse_with(url, &o).unwrap_err();
        assert_eq!(e.kind(), kind, "{url}: {e}");
        let text = e.to_string();
        assert!(
            text.starts_with(url),
            "{url}: message does not name the URL: {text}"
        );
        assert!(text.contains(needle), "{url}: {text}");
    }
    let e =
        Location::parse_with("s3://b/x", &opts.clone().with("aws_access_key_id", "k")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Credentials, "{e}");
    assert!(e.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{e}");
    let e = Location::parse_with("s3://b/x", &opts.with("no_such_key", "1")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidUrl, "{e}");
    assert!(e.to_string().contains("no_such_key"), "{e}");
}

#[test]
fn coalesce_merges_close_ranges_and_splits_long_ones() {
    assert_eq!(coalesce(&[], 10, 100), Vec::<std::ops::Range<u64>>::new());
    assert_eq!(
        coalesce(std::slice::from_ref(&(5..5)), 10, 100),
        Vec::<std::ops::Range<u64>>::new()
    );
    // Overlaps, repeats and out-of-order input.
    assert_eq!(
        coalesce(&[30..40, 0..10, 5..12, 30..40], 0, 100),
        vec![0..12, 30..40]
    );
    // A gap of exactly `gap` merges; one byte more does not.
    assert_eq!(coalesce(&[0..10, 15..20], 5, 100), vec![0..20]);
    assert_eq!(coalesce(&[0..10, 16..20], 5, 100), vec![0..10, 16..20]);
    // Splitting keeps every byte exactly once.
    let reqs = coalesce(&[0..1000, 1001..1010], 1, 300);
    assert_eq!(reqs, vec![0..300, 300..600, 600..900, 900..1010]);
}

/// A file of known bytes in a local store, read through a `RangeReader` with small requests,
/// so that ranges span several requests and several ranges share one.
#[test]
fn range_reader_reads_exact_ranges_from_a_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(dir.path().join("blob"), &bytes).unwrap();
    let loc = Location::parse(dir.path().to_str().unwrap()).unwrap();
    let reader = RangeReader::new(&loc, "blob").with_options(ReadOptions {
        concurrency: 4,
        coalesce_gap: 100,
        max_request: 4096,
        ..ReadOptions::default()
    });
    let ranges = vec![
        10..20,
        15..5000,
        5050..5060,
        99_990..100_000,
        7..7,
        60_000..70_000,
    ];
    let got = reader.read_blocking(&ranges).unwrap();
    for (r, b) in ranges.iter().zip(&got) {
        assert_eq!(
            b.as_slice(),
            &bytes[r.start as usize..r.end as usize],
            "{r:?}"
        );
    }
    // 10..5060 (one span, 2 requests of 4096 bytes) and 60_000..70_000 (3) and the tail (1).
    assert_eq!(reader.stats().requests, 2 + 3 + 1);
    assert_eq!(reader.stats().retries, 0);
    assert_eq!(reader.head_blocking().unwrap().0, bytes.len() as u64);

    // A range past the end fails, naming the URL, the part and the range.
    let e = reader
        .read_blocking(std::slice::from_ref(&(99_000..100_001)))
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("blob") && text.contains("bytes 99000..100001"),
        "{text}"
    );

    let missing = RangeReader::new(&loc, "nothing-here");
    let e = missing
        .read_blocking(std::slice::from_ref(&(0..1)))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("nothing-here"), "{e}");
}

#[test]
fn cache_round_trips_and_evicts_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), 300).unwrap();
    let keys: Vec<CacheKey> = (0..4).map(|i| CacheKey::whole(sha(i), 100)).collect();
    for (i, k) in keys.iter().enumerate().take(3) {
        assert!(cache.get(k).unwrap().is_none());
        cache.insert(k, &[i as u8; 100]).unwrap();
    }
    assert_eq!(cache.usage().unwrap(), 300);
    // Make key 0 the most recently used, then key 1 the least: a fourth entry evicts key 1.
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    for (k, t) in [
        (&keys[1], old),
        (&keys[2], old + std::time::Duration::from_secs(1)),
    ] {
        std::fs::File::options()
            .write(true)
            .open(cache.entry_path(k))
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
    let mut held = cache.get(&keys[1]).unwrap().unwrap(); // a reader holding key 1 open
    std::fs::File::options()
        .write(true)
        .open(cache.entry_path(&keys[1]))
        .unwrap()
        .set_modified(old)
        .unwrap();
    cache.insert(&keys[3], &[3; 100]).unwrap();
    assert!(
        cache.get(&keys[1]).unwrap().is_none(),
        "the least recently used entry stays"
    );
    assert_eq!(cache.read(&keys[0]).unwrap().unwrap(), vec![0; 100]);
    assert_eq!(cache.read(&keys[2]).unwrap().unwrap(), vec![2; 100]);
    assert_eq!(cache.read(&keys[3]).unwrap().unwrap(), vec![3; 100]);
    assert_eq!(cache.usage().unwrap(), 300);
    // The evicted entry's reader still has all its bytes.
    let mut v = Vec::new();
    held.read_to_end(&mut v).unwrap();
    assert_eq!(v, vec![1; 100]);

    // A range entry is separate from the whole part; a wrong length is refused.
    let r = CacheKey {
        sha256: sha(9),
        range: 10..20,
    };
    cache.insert(&r, &[7; 10]).unwrap();
    assert_eq!(cache.read(&r).unwrap().unwrap(), vec![7; 10]);
    assert!(cache.insert(&r, &[7; 11]).is_err());
    let bad = CacheKey::whole("not-a-sha", 1);
    assert_eq!(cache.get(&bad).unwrap_err().kind(), ErrorKind::InvalidInput);
}

#[test]
fn contains_finds_whole_entries_and_leaves_their_recency() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), 1 << 20).unwrap();
    let key = CacheKey::whole(sha(1), 10);
    assert!(!cache.contains(&key).unwrap());
    cache.insert(&key, &[1; 10]).unwrap();
    assert!(cache.contains(&key).unwrap());
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    let path = cache.entry_path(&key);
    let touch = |t| {
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(t)
            .unwrap()
    };
    touch(old);
    assert!(cache.contains(&key).unwrap());
    let mtime = || std::fs::metadata(&path).unwrap().modified().unwrap();
    assert_eq!(mtime(), old, "a presence check is not a use");
    cache.get(&key).unwrap().unwrap();
    assert!(mtime() > old, "a read is");
    // An entry cut short (damage from outside) is not there.
    std::fs::write(&path, [1; 4]).unwrap();
    assert!(!cache.contains(&key).unwrap());
    assert_eq!(
        cache
            .contains(&CacheKey::whole("nope", 1))
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
}

#[test]
fn a_failed_fill_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), 1 << 20).unwrap();
    let key = CacheKey::whole(sha(1), 10);
    let e = cache
        .insert_with(&key, |_, _| Err(crate::Error::invalid_input("refused")))
        .unwrap_err();
    assert!(e.to_string().contains("refused"));
    assert!(cache.get(&key).unwrap().is_none());
    let leftovers: Vec<_> = walk(dir.path());
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// `fetch_verified` through a local store: the checksum is checked, a mismatch publishes
/// nothing and names the part.
#[test]
fn fetch_verified_checks_the_checksum() {
    use sha2::{Digest, Sha256};
    let data = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::create_dir(data.path().join("matrix")).unwrap();
    std::fs::write(data.path().join("matrix/p.arrow"), &bytes).unwrap();
    let good: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let loc = Location::parse(data.path().to_str().unwrap()).unwrap();
    let reader = RangeReader::new(&loc, "matrix/p.arrow").with_options(ReadOptions {
        max_request: 7000,
        retries: 1,
        backoff: std::time::Duration::ZERO,
        ..ReadOptions::default()
    });
    let cdir = tempfile::tempdir().unwrap();
    let cache = Cache::open(cdir.path(), 1 << 20).unwrap();
    let mut f = fetch_verified(&reader, Some(&cache), &good, bytes.len() as u64).unwrap();
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    assert_eq!(v, bytes);
    assert_eq!(
        cache
            .read(&CacheKey::whole(&good, bytes.len() as u64))
            .unwrap()
            .unwrap(),
        bytes
    );

    let wrong = sha(0xab);
    let e = fetch_verified(&reader, Some(&cache), &wrong, bytes.len() as u64).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Remote);
    let text = e.to_string();
    assert!(
        text.contains("matrix/p.arrow") && text.contains("bytes 0..50000"),
        "{text}"
    );
    assert!(text.contains("checksum"), "{text}");
    assert!(cache
        .get(&CacheKey::whole(&wrong, bytes.len() as u64))
        .unwrap()
        .is_none());

    let e = fetch_verified(&reader, None, &good, 10).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidCorpus, "{e}");
    assert!(e.to_string().contains("50000 bytes"), "{e}");
}
