//! Small HDF5 helpers shared by the matrix and dataframe readers: error mapping, attributes,
//! dtype inspection, string reads and reads of single compound fields (legacy layout).

use std::cell::RefCell;
use std::path::Path;

use hdf5::types::{
    CompoundField, CompoundType, FloatSize, TypeDescriptor, VarLenAscii, VarLenUnicode,
};
use hdf5::{Dataset, Group, H5Type, Location};

use crate::error::{Error, ErrorKind, Result};

/// Maps an HDF5 library error on `object` of `path` to [`ErrorKind::NotHdf5`]: the library
/// could not read what the file claims to hold (truncated, corrupt, unreadable chunk ...).
pub(crate) fn h5err(path: &Path, object: &str, e: hdf5::Error) -> Error {
    Error::new(ErrorKind::NotHdf5, format!("HDF5 could not read it: {e}"))
        .with_path(path)
        .with_object(object)
}

/// Joins an HDF5 group path and a member name.
pub(crate) fn join(parent: &str, name: &str) -> String {
    if parent.ends_with('/') {
        format!("{parent}{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// What an HDF5 path points at.
pub(crate) enum Node {
    Group(Group),
    Dataset(Dataset),
}

/// Opens `name` (relative to `parent`) as a group or a dataset, `None` when no such link exists.
pub(crate) fn open_node(
    parent: &Group,
    name: &str,
    path: &Path,
    object: &str,
) -> Result<Option<Node>> {
    if !parent.link_exists(name) {
        return Ok(None);
    }
    match parent
        .loc_type_by_name(name)
        .map_err(|e| h5err(path, object, e))?
    {
        hdf5::LocationType::Group => Ok(Some(Node::Group(
            parent.group(name).map_err(|e| h5err(path, object, e))?,
        ))),
        hdf5::LocationType::Dataset => Ok(Some(Node::Dataset(
            parent.dataset(name).map_err(|e| h5err(path, object, e))?,
        ))),
        other => Err(Error::h5ad(
            path,
            object,
            format!("expected a group or dataset, found {other:?}"),
        )),
    }
}

/// Reads a string attribute (vlen or fixed, UTF-8 or ASCII, scalar or one-element array);
/// `None` when absent or not a string.
pub(crate) fn attr_string(loc: &Location, name: &str) -> Option<String> {
    let attr = loc.attr(name).ok()?;
    let desc = attr.dtype().ok()?.to_descriptor().ok()?;
    let size = attr.size();
    if size != 1 {
        return None;
    }
    let v = read_strings_container(&attr, &desc, 1).ok()?;
    v.into_iter().next()
}

/// Reads a string-array attribute (such as `column-order`); an empty numeric array (h5py writes
/// empty lists as float64) gives an empty vector.
pub(crate) fn attr_strings(loc: &Location, name: &str) -> Option<Vec<String>> {
    let attr = loc.attr(name).ok()?;
    let desc = attr.dtype().ok()?.to_descriptor().ok()?;
    let size = attr.size();
    if size == 0 {
        return Some(Vec::new());
    }
    read_strings_container(&attr, &desc, size).ok()
}

/// Reads a boolean-ish attribute (`ordered`): bool, integer or the strings "True"/"False".
pub(crate) fn attr_bool(loc: &Location, name: &str) -> Option<bool> {
    let attr = loc.attr(name).ok()?;
    let desc = attr.dtype().ok()?.to_descriptor().ok()?;
    match desc {
        TypeDescriptor::Boolean => attr.read_scalar::<bool>().ok().or_else(|| {
            attr.read_raw::<bool>()
                .ok()
                .and_then(|v| v.first().copied())
        }),
        TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_) => attr
            .read_raw::<i64>()
            .ok()
            .and_then(|v| v.first().map(|x| *x != 0)),
        _ => attr_string(loc, name).map(|s| s.eq_ignore_ascii_case("true")),
    }
}

/// Reads an integer-array attribute (such as `shape`).
pub(crate) fn attr_ints(loc: &Location, name: &str) -> Option<Vec<i64>> {
    let attr = loc.attr(name).ok()?;
    match attr.dtype().ok()?.to_descriptor().ok()? {
        TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_) | TypeDescriptor::Float(_) => {
            attr.read_raw::<i64>().ok()
        }
        _ => None,
    }
}

/// The `encoding-type` attribute of an object, if any.
pub(crate) fn encoding_type(loc: &Location) -> Option<String> {
    attr_string(loc, "encoding-type")
}

/// The dtype descriptor of a dataset.
pub(crate) fn dtype(ds: &Dataset, path: &Path, object: &str) -> Result<TypeDescriptor> {
    ds.dtype()
        .and_then(|t| t.to_descriptor())
        .map_err(|e| Error::unsupported(path, object, format!("unsupported HDF5 datatype: {e}")))
}

/// A readable numeric dtype: integer or float.
pub(crate) fn is_numeric(d: &TypeDescriptor) -> bool {
    matches!(
        d,
        TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_) | TypeDescriptor::Float(_)
    )
}

/// True for integer dtypes.
pub(crate) fn is_integer(d: &TypeDescriptor) -> bool {
    matches!(d, TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_))
}

/// True for string dtypes.
pub(crate) fn is_string(d: &TypeDescriptor) -> bool {
    matches!(
        d,
        TypeDescriptor::VarLenUnicode
            | TypeDescriptor::VarLenAscii
            | TypeDescriptor::FixedAscii(_)
            | TypeDescriptor::FixedUnicode(_)
    )
}

/// A short numpy-like name for messages.
pub(crate) fn dtype_name(d: &TypeDescriptor) -> String {
    match d {
        TypeDescriptor::Compound(_) => "compound".into(),
        TypeDescriptor::Enum(_) => "enum".into(),
        TypeDescriptor::VarLenUnicode | TypeDescriptor::VarLenAscii => {
            "variable-length string".into()
        }
        TypeDescriptor::FixedAscii(n) | TypeDescriptor::FixedUnicode(n) => {
            format!("fixed string ({n} bytes)")
        }
        other => other.to_string(),
    }
}

/// Refuses datasets whose filters this HDF5 build cannot decode, naming the filter, before a
/// read fails deep inside the library.
pub(crate) fn check_filters(ds: &Dataset, path: &Path, object: &str) -> Result<()> {
    for f in ds.filters() {
        let info = hdf5::filters::Filter::get_info(f.id());
        if !info.is_available || !info.decode_enabled {
            let name = match f.id() {
                32001 => "blosc".to_string(),
                32004 => "lz4".to_string(),
                32008 => "bitshuffle".to_string(),
                32015 => "zstd".to_string(),
                id => format!("id {id}"),
            };
            return Err(Error::unsupported(
                path,
                object,
                format!("compressed with HDF5 filter {name}, which is not available (gzip, lzf, szip, shuffle, scale-offset and n-bit are)"),
            ));
        }
    }
    Ok(())
}

thread_local! {
    /// Memory type used by [`DynByte`] and field name used by [`Field`]: HDF5 needs a memory
    /// datatype at read time, and the crate only takes it from a type's static descriptor.
    static DYN_TYPE: RefCell<Option<TypeDescriptor>> = const { RefCell::new(None) };
    static FIELD_NAME: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A byte whose HDF5 descriptor is whatever [`DYN_TYPE`] holds; buffers of it are sized
/// `n_elements * descriptor size` so HDF5 can write the runtime-described elements into them.
#[repr(transparent)]
#[derive(Clone, Copy)]
struct DynByte(#[allow(dead_code)] u8);

unsafe impl H5Type for DynByte {
    fn type_descriptor() -> TypeDescriptor {
        DYN_TYPE.with(|t| {
            t.borrow()
                .clone()
                .expect("DynByte read without a memory type")
        })
    }
}

/// Reads all elements of a container (dataset or attribute) into bytes laid out as `mem`.
fn read_dyn_bytes(c: &hdf5::Container, mem: &TypeDescriptor, n: usize) -> hdf5::Result<Vec<u8>> {
    let size = mem.size();
    let mut buf = vec![DynByte(0); n * size];
    DYN_TYPE.with(|t| *t.borrow_mut() = Some(mem.clone()));
    let r = c.as_reader().read_into_raw(&mut buf);
    DYN_TYPE.with(|t| *t.borrow_mut() = None);
    r?;
    Ok(buf.into_iter().map(|b| b.0).collect())
}

/// A one-member compound whose member name comes from [`FIELD_NAME`]: reading it converts only
/// that field of a compound dataset (HDF5 matches compound members by name).
#[repr(transparent)]
struct Field<T>(T);

unsafe impl<T: H5Type> H5Type for Field<T> {
    fn type_descriptor() -> TypeDescriptor {
        let name = FIELD_NAME.with(|n| n.borrow().clone());
        TypeDescriptor::Compound(CompoundType {
            fields: vec![CompoundField {
                name,
                ty: T::type_descriptor(),
                offset: 0,
                index: 0,
            }],
            size: std::mem::size_of::<T>(),
        })
    }
}

fn read_field<T: H5Type>(ds: &Dataset, field: &str) -> hdf5::Result<Vec<T>> {
    FIELD_NAME.with(|n| *n.borrow_mut() = field.to_string());
    let r = ds.as_reader().read_raw::<Field<T>>();
    FIELD_NAME.with(|n| n.borrow_mut().clear());
    Ok(r?.into_iter().map(|f| f.0).collect())
}

/// Decodes a NUL-padded fixed-length string.
fn fixed_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Reads `n` strings of any string dtype from a dataset or attribute.
fn read_strings_container(
    c: &hdf5::Container,
    desc: &TypeDescriptor,
    n: usize,
) -> hdf5::Result<Vec<String>> {
    match desc {
        TypeDescriptor::VarLenUnicode => Ok(c
            .as_reader()
            .read_raw::<VarLenUnicode>()?
            .into_iter()
            .map(|s| s.as_str().to_owned())
            .collect()),
        TypeDescriptor::VarLenAscii => Ok(c
            .as_reader()
            .read_raw::<VarLenAscii>()?
            .into_iter()
            .map(|s| s.as_str().to_owned())
            .collect()),
        TypeDescriptor::FixedAscii(k) | TypeDescriptor::FixedUnicode(k) => {
            // One spare byte: converting to a NUL-terminated memory type of the same size would
            // drop the last character of a full-width NUL-padded string.
            let mem = match desc {
                TypeDescriptor::FixedAscii(_) => TypeDescriptor::FixedAscii(k + 1),
                _ => TypeDescriptor::FixedUnicode(k + 1),
            };
            let bytes = read_dyn_bytes(c, &mem, n)?;
            Ok(bytes.chunks(k + 1).map(fixed_str).collect())
        }
        other => Err(format!("expected strings, found {}", dtype_name(other)).into()),
    }
}

/// Reads a 1-D string dataset (any string dtype).
pub(crate) fn read_strings(ds: &Dataset, path: &Path, object: &str) -> Result<Vec<String>> {
    check_filters(ds, path, object)?;
    let desc = dtype(ds, path, object)?;
    if !is_string(&desc) {
        return Err(Error::h5ad(
            path,
            object,
            format!("expected strings, found {}", dtype_name(&desc)),
        ));
    }
    read_strings_container(ds, &desc, ds.size()).map_err(|e| h5err(path, object, e))
}

/// Reads one string field of a compound dataset.
pub(crate) fn read_field_strings(
    ds: &Dataset,
    field: &str,
    ty: &TypeDescriptor,
    path: &Path,
    object: &str,
) -> Result<Vec<String>> {
    let n = ds.size();
    let r = match ty {
        TypeDescriptor::VarLenUnicode => read_field::<VarLenUnicode>(ds, field)
            .map(|v| v.into_iter().map(|s| s.as_str().to_owned()).collect()),
        TypeDescriptor::VarLenAscii => read_field::<VarLenAscii>(ds, field)
            .map(|v| v.into_iter().map(|s| s.as_str().to_owned()).collect()),
        TypeDescriptor::FixedAscii(k) | TypeDescriptor::FixedUnicode(k) => {
            let inner = match ty {
                TypeDescriptor::FixedAscii(_) => TypeDescriptor::FixedAscii(k + 1),
                _ => TypeDescriptor::FixedUnicode(k + 1),
            };
            let mem = TypeDescriptor::Compound(CompoundType {
                fields: vec![CompoundField {
                    name: field.to_string(),
                    ty: inner,
                    offset: 0,
                    index: 0,
                }],
                size: k + 1,
            });
            read_dyn_bytes(ds, &mem, n).map(|b| b.chunks(k + 1).map(fixed_str).collect())
        }
        other => {
            return Err(Error::h5ad(
                path,
                object,
                format!("expected strings, found {}", dtype_name(other)),
            ))
        }
    };
    r.map_err(|e| h5err(path, object, e))
}

/// Reads one field of a compound dataset (legacy obs/var), converted to `T` by HDF5
/// (numeric fields as `f64`, `i64` or `u64`, boolean enums as `bool`).
pub(crate) fn read_field_as<T: H5Type>(
    ds: &Dataset,
    field: &str,
    path: &Path,
    object: &str,
) -> Result<Vec<T>> {
    read_field::<T>(ds, field).map_err(|e| h5err(path, object, e))
}

/// Reads one fixed-array field (`k` elements per row) of a compound dataset as row-major f64.
pub(crate) fn read_field_array_f64(
    ds: &Dataset,
    field: &str,
    k: usize,
    path: &Path,
    object: &str,
) -> Result<Vec<f64>> {
    let inner = TypeDescriptor::FixedArray(Box::new(TypeDescriptor::Float(FloatSize::U8)), k);
    let mem = TypeDescriptor::Compound(CompoundType {
        fields: vec![CompoundField {
            name: field.to_string(),
            ty: inner,
            offset: 0,
            index: 0,
        }],
        size: 8 * k,
    });
    let bytes = read_dyn_bytes(ds, &mem, ds.size()).map_err(|e| h5err(path, object, e))?;
    Ok(bytes
        .chunks_exact(8)
        .map(|b| f64::from_ne_bytes(b.try_into().expect("chunks_exact(8) yields 8 bytes")))
        .collect())
}
