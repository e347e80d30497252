//! Block shuffle.
pub struct BlockShuffle;
pub fn mean_label_entropy() {}
