//! Spatial blocks.
pub struct BlockConfig;
pub struct SpatialBlocks;
