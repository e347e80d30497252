//! `cellarrow append` from the command line: the corpus grows by the new file's cells and keeps
//! its parts' bytes; a file already in the corpus is refused, naming it, and nothing changes.

use cellarrow::Corpus;

use crate::common::*;

#[test]
fn append_grows_the_corpus_and_refuses_a_file_it_already_holds() {
    let tmp = scratch("cli-append");
    let dest = tmp.path().join("c.corpus");
    let out = cli([
        "convert".as_ref(),
        chr21().as_os_str(),
        "-o".as_ref(),
        dest.as_os_str(),
        "-q".as_ref(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = Corpus::open(&dest).unwrap();
    let (cells, genes) = (before.n_cells(), before.n_genes());
    drop(before);
    let part0 = std::fs::read(dest.join("matrix/part-00000.arrow")).unwrap();

    let new = data("debian_sctransform_pbmc_counts.h5ad");
    let out = cli([
        "append".as_ref(),
        dest.as_os_str(),
        new.as_os_str(),
        "--json".as_ref(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let after = Corpus::open(&dest).unwrap();
    assert_eq!(after.n_cells(), cells + 283, "{summary}");
    assert!(after.n_genes() > genes, "the vocabulary grew");
    assert_eq!(
        std::fs::read(dest.join("matrix/part-00000.arrow")).unwrap(),
        part0,
        "an existing part keeps its bytes"
    );
    cellarrow::corpus::validate(&dest).unwrap();

    let grown = snapshot(&dest);
    let out = cli([
        "append".as_ref(),
        dest.as_os_str(),
        new.as_os_str(),
        "-q".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_no_panic("append of a held file", &out);
    assert!(
        stderr(&out).contains("debian_sctransform_pbmc_counts"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot(&dest), grown, "a refused append changes nothing");
    assert_eq!(leftovers(&dest), Vec::<String>::new());
}
