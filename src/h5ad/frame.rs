//! obs / var / raw.var dataframes and `obsm` arrays, in the current encoding, the early 0.7
//! layout (`__categories` group, no per-column encoding attributes) and the pre-0.7 layout
//! (compound datasets, categories under `uns/<col>_categories`).

use std::sync::Arc;

use arrow::array::{
    make_array, Array, ArrayRef, BooleanArray, DictionaryArray, Float32Array, Float64Array,
    Int16Array, Int32Array, Int64Array, Int8Array, StringArray, UInt16Array, UInt32Array,
    UInt64Array, UInt8Array,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Int32Type};
use hdf5::types::{FloatSize, IntSize, TypeDescriptor};
use hdf5::{Dataset, Group};

use super::util::{
    attr_bool, attr_string, attr_strings, check_filters, dtype, dtype_name, encoding_type, h5err,
    is_integer, is_numeric, is_string, join, open_node, read_field_array_f64, read_field_as,
    read_field_strings, read_strings, Node,
};
use super::{Frame, H5ad};
use crate::error::{Error, Result};

/// A dataframe as stored: a group (0.7 and later) or a compound dataset (pre-0.7).
enum FrameNode {
    Group(Group),
    Compound(Dataset, Vec<(String, TypeDescriptor)>),
}

fn open_frame(h5: &H5ad, object: &str) -> Result<Option<FrameNode>> {
    let path = h5.path();
    let root: &Group = &h5.file;
    match open_node(root, object.trim_start_matches('/'), path, object)? {
        None => Ok(None),
        Some(Node::Group(g)) => match encoding_type(&g).as_deref() {
            None | Some("dataframe") => Ok(Some(FrameNode::Group(g))),
            Some(other) => Err(Error::unsupported(
                path,
                object,
                format!("expected a dataframe, found encoding-type {other:?}"),
            )),
        },
        Some(Node::Dataset(ds)) => match dtype(&ds, path, object)? {
            TypeDescriptor::Compound(ct) => {
                let mut fields = ct.fields;
                fields.sort_by_key(|f| f.index);
                Ok(Some(FrameNode::Compound(
                    ds,
                    fields.into_iter().map(|f| (f.name, f.ty)).collect(),
                )))
            }
            other => Err(Error::h5ad(
                path,
                object,
                format!(
                    "expected a dataframe group or compound dataset, found a {} dataset",
                    dtype_name(&other)
                ),
            )),
        },
    }
}

/// The index column of a dataframe group: the `_index` attribute, else `_index` or `index`.
fn index_name(g: &Group) -> Option<String> {
    attr_string(g, "_index").or_else(|| {
        ["_index", "index"]
            .into_iter()
            .find(|n| g.link_exists(n))
            .map(str::to_string)
    })
}

/// The index field of a legacy compound dataframe.
fn compound_index(fields: &[(String, TypeDescriptor)]) -> Option<&(String, TypeDescriptor)> {
    fields
        .iter()
        .find(|(n, _)| n == "index")
        .or_else(|| fields.iter().find(|(n, _)| n == "_index"))
}

/// Number of rows of a dataframe, without reading it; `None` when the object is absent.
pub(crate) fn frame_len(h5: &H5ad, object: &str) -> Result<Option<u64>> {
    match open_frame(h5, object)? {
        None => Ok(None),
        Some(FrameNode::Compound(ds, _)) => Ok(Some(ds.size() as u64)),
        Some(FrameNode::Group(g)) => {
            let name = index_name(&g).ok_or_else(|| {
                Error::h5ad(
                    h5.path(),
                    object,
                    "dataframe without an index (_index attribute)",
                )
            })?;
            match open_node(&g, &name, h5.path(), &join(object, &name))? {
                Some(Node::Dataset(ds)) => Ok(Some(ds.size() as u64)),
                _ => Err(Error::h5ad(
                    h5.path(),
                    join(object, &name),
                    "index column missing or not a dataset",
                )),
            }
        }
    }
}

/// Reads a dataframe; `columns` limits the columns read (absent ones are skipped).
pub(crate) fn read_frame(h5: &H5ad, object: &str, columns: Option<&[String]>) -> Result<Frame> {
    let path = h5.path();
    let wanted = |name: &str| columns.is_none_or(|c| c.iter().any(|x| x == name));
    match open_frame(h5, object)? {
        None => Err(Error::h5ad(
            path,
            object,
            "missing: the file has no such dataframe",
        )),
        Some(FrameNode::Group(g)) => {
            let idx_name = index_name(&g).ok_or_else(|| {
                Error::h5ad(
                    path,
                    object,
                    "dataframe without an index (_index attribute)",
                )
            })?;
            let (idx, _) = read_column(h5, &g, object, &idx_name)?;
            let index = to_strings(&idx, path, &join(object, &idx_name))?;
            let order = match attr_strings(&g, "column-order") {
                Some(o) => o,
                None => g
                    .member_names()
                    .map_err(|e| h5err(path, object, e))?
                    .into_iter()
                    .filter(|n| n != &idx_name && n != "__categories")
                    .collect(),
            };
            let mut out = Vec::new();
            for name in order.iter().filter(|n| wanted(n)) {
                let (arr, _) = read_column(h5, &g, object, name)?;
                if arr.len() != index.len() {
                    return Err(Error::h5ad(
                        path,
                        join(object, name),
                        format!("has {} rows but the index has {}", arr.len(), index.len()),
                    ));
                }
                out.push((name.clone(), arr));
            }
            Ok(Frame {
                index,
                columns: out,
            })
        }
        Some(FrameNode::Compound(ds, fields)) => {
            check_filters(&ds, path, object)?;
            let Some((idx_name, idx_ty)) = compound_index(&fields) else {
                return Err(Error::h5ad(
                    path,
                    object,
                    "legacy dataframe without an index field",
                ));
            };
            let idx = read_compound_field(h5, &ds, object, idx_name, idx_ty, false)?;
            let index = to_strings(&idx, path, object)?;
            let mut out = Vec::new();
            for (name, ty) in fields.iter().filter(|(n, _)| n != idx_name && wanted(n)) {
                out.push((
                    name.clone(),
                    read_compound_field(h5, &ds, object, name, ty, true)?,
                ));
            }
            Ok(Frame {
                index,
                columns: out,
            })
        }
    }
}

/// One field of a legacy compound dataframe; integer fields with `uns/<name>_categories` are
/// categorical codes.
fn read_compound_field(
    h5: &H5ad,
    ds: &Dataset,
    object: &str,
    name: &str,
    ty: &TypeDescriptor,
    categorical_ok: bool,
) -> Result<ArrayRef> {
    let path = h5.path();
    let obj = format!("{object}[{name}]");
    if categorical_ok && is_integer(ty) {
        let cat_name = format!("uns/{name}_categories");
        if h5.file.link_exists(&cat_name) {
            let cat_obj = format!("/{cat_name}");
            let cats = match open_node(&h5.file, &cat_name, path, &cat_obj)? {
                Some(Node::Dataset(c)) => read_category_values(&c, path, &cat_obj)?,
                _ => return Err(Error::h5ad(path, cat_obj, "categories must be a dataset")),
            };
            let codes = read_field_as::<i64>(ds, name, path, &obj)?;
            return categorical(&codes, cats, path, &obj);
        }
    }
    let arr: ArrayRef = match ty {
        TypeDescriptor::Integer(s) => {
            let v = read_field_as::<i64>(ds, name, path, &obj)?;
            match s {
                IntSize::U1 => Arc::new(Int8Array::from_iter_values(v.iter().map(|&x| x as i8))),
                IntSize::U2 => Arc::new(Int16Array::from_iter_values(v.iter().map(|&x| x as i16))),
                IntSize::U4 => Arc::new(Int32Array::from_iter_values(v.iter().map(|&x| x as i32))),
                IntSize::U8 => Arc::new(Int64Array::from(v)),
            }
        }
        TypeDescriptor::Unsigned(s) => {
            let v = read_field_as::<u64>(ds, name, path, &obj)?;
            match s {
                IntSize::U1 => Arc::new(UInt8Array::from_iter_values(v.iter().map(|&x| x as u8))),
                IntSize::U2 => Arc::new(UInt16Array::from_iter_values(v.iter().map(|&x| x as u16))),
                IntSize::U4 => Arc::new(UInt32Array::from_iter_values(v.iter().map(|&x| x as u32))),
                IntSize::U8 => Arc::new(UInt64Array::from(v)),
            }
        }
        TypeDescriptor::Float(FloatSize::U4) => {
            let v = read_field_as::<f64>(ds, name, path, &obj)?;
            Arc::new(Float32Array::from_iter_values(v.iter().map(|&x| x as f32)))
        }
        TypeDescriptor::Float(_) => Arc::new(Float64Array::from(read_field_as::<f64>(
            ds, name, path, &obj,
        )?)),
        TypeDescriptor::Boolean => Arc::new(BooleanArray::from(read_field_as::<bool>(
            ds, name, path, &obj,
        )?)),
        t if is_string(t) => Arc::new(StringArray::from(read_field_strings(
            ds, name, t, path, &obj,
        )?)),
        other => {
            return Err(Error::unsupported(
                path,
                obj,
                format!(
                    "legacy dataframe field of dtype {} is not supported",
                    dtype_name(other)
                ),
            ))
        }
    };
    Ok(arr)
}

/// Reads column `name` of dataframe group `g`; also says whether it is an ordered categorical.
fn read_column(h5: &H5ad, g: &Group, frame_obj: &str, name: &str) -> Result<(ArrayRef, bool)> {
    let path = h5.path();
    let obj = join(frame_obj, name);
    match open_node(g, name, path, &obj)? {
        None => Err(Error::h5ad(path, obj, "listed in column-order but missing")),
        Some(Node::Dataset(ds)) => {
            match encoding_type(&ds).as_deref() {
                None | Some("array") | Some("string-array") => {}
                Some(other) => {
                    return Err(Error::unsupported(
                        path,
                        obj,
                        format!("column encoding-type {other:?} is not supported"),
                    ))
                }
            }
            if ds.ndim() != 1 {
                return Err(Error::unsupported(
                    path,
                    obj,
                    format!(
                        "a dataframe column must be 1-D, found {} dimensions",
                        ds.ndim()
                    ),
                ));
            }
            check_filters(&ds, path, &obj)?;
            let desc = dtype(&ds, path, &obj)?;
            // anndata 0.7.0-0.7.5: codes dataset whose `categories` attribute references
            // `__categories/<name>`.
            if is_integer(&desc) && ds.attr("categories").is_ok() {
                let cat_rel = format!("__categories/{name}");
                let cat_obj = join(frame_obj, &cat_rel);
                let Some(Node::Dataset(cds)) = open_node(g, &cat_rel, path, &cat_obj)? else {
                    return Err(Error::h5ad(
                        path,
                        cat_obj,
                        "categories of a legacy categorical are missing",
                    ));
                };
                let cats = read_category_values(&cds, path, &cat_obj)?;
                let ordered = attr_bool(&cds, "ordered").unwrap_or(false);
                let codes = read_all::<i64>(&ds, path, &obj)?;
                return Ok((categorical(&codes, cats, path, &obj)?, ordered));
            }
            Ok((plain_array(&ds, &desc, path, &obj)?, false))
        }
        Some(Node::Group(sub)) => match encoding_type(&sub).as_deref() {
            Some("categorical") => {
                let codes_ds = member_dataset(&sub, &obj, "codes", path)?;
                let cats_ds = member_dataset(&sub, &obj, "categories", path)?;
                let cats = read_category_values(&cats_ds, path, &join(&obj, "categories"))?;
                let cobj = join(&obj, "codes");
                let ct = dtype(&codes_ds, path, &cobj)?;
                if !is_integer(&ct) {
                    return Err(Error::h5ad(
                        path,
                        cobj,
                        format!("codes must be integers, found {}", dtype_name(&ct)),
                    ));
                }
                let codes = read_all::<i64>(&codes_ds, path, &cobj)?;
                let ordered = attr_bool(&sub, "ordered").unwrap_or(false);
                Ok((categorical(&codes, cats, path, &obj)?, ordered))
            }
            Some(enc @ ("nullable-integer" | "nullable-boolean" | "nullable-string-array")) => {
                let values_ds = member_dataset(&sub, &obj, "values", path)?;
                let mask_ds = member_dataset(&sub, &obj, "mask", path)?;
                let vobj = join(&obj, "values");
                let vt = dtype(&values_ds, path, &vobj)?;
                let type_ok = match enc {
                    "nullable-integer" => is_integer(&vt),
                    "nullable-boolean" => vt == TypeDescriptor::Boolean,
                    _ => is_string(&vt),
                };
                if !type_ok {
                    return Err(Error::h5ad(
                        path,
                        vobj,
                        format!("{enc} values of dtype {}", dtype_name(&vt)),
                    ));
                }
                let values = plain_array(&values_ds, &vt, path, &vobj)?;
                let mobj = join(&obj, "mask");
                let mask = read_all::<bool>(&mask_ds, path, &mobj)?;
                if mask.len() != values.len() {
                    return Err(Error::h5ad(
                        path,
                        mobj,
                        format!("has {} entries but values has {}", mask.len(), values.len()),
                    ));
                }
                // anndata's mask is true where the value is missing; Arrow's validity is the inverse.
                let valid = NullBuffer::from(mask.iter().map(|m| !m).collect::<Vec<bool>>());
                let data = values.to_data().into_builder().nulls(Some(valid)).build()?;
                Ok((make_array(data), false))
            }
            Some(other) => Err(Error::unsupported(
                path,
                obj,
                format!("column encoding-type {other:?} is not supported"),
            )),
            None => Err(Error::h5ad(
                path,
                obj,
                "a column group without encoding-type",
            )),
        },
    }
}

fn member_dataset(g: &Group, obj: &str, name: &str, path: &std::path::Path) -> Result<Dataset> {
    let o = join(obj, name);
    match open_node(g, name, path, &o)? {
        Some(Node::Dataset(ds)) => {
            check_filters(&ds, path, &o)?;
            Ok(ds)
        }
        _ => Err(Error::h5ad(path, o, "missing or not a dataset")),
    }
}

fn read_all<T: hdf5::H5Type>(ds: &Dataset, path: &std::path::Path, obj: &str) -> Result<Vec<T>> {
    check_filters(ds, path, obj)?;
    ds.as_reader()
        .read_raw::<T>()
        .map_err(|e| h5err(path, obj, e))
}

/// A 1-D dataset as an Arrow array of its own dtype.
fn plain_array(
    ds: &Dataset,
    desc: &TypeDescriptor,
    path: &std::path::Path,
    obj: &str,
) -> Result<ArrayRef> {
    use TypeDescriptor as T;
    Ok(match desc {
        T::Integer(IntSize::U1) => Arc::new(Int8Array::from(read_all::<i8>(ds, path, obj)?)),
        T::Integer(IntSize::U2) => Arc::new(Int16Array::from(read_all::<i16>(ds, path, obj)?)),
        T::Integer(IntSize::U4) => Arc::new(Int32Array::from(read_all::<i32>(ds, path, obj)?)),
        T::Integer(IntSize::U8) => Arc::new(Int64Array::from(read_all::<i64>(ds, path, obj)?)),
        T::Unsigned(IntSize::U1) => Arc::new(UInt8Array::from(read_all::<u8>(ds, path, obj)?)),
        T::Unsigned(IntSize::U2) => Arc::new(UInt16Array::from(read_all::<u16>(ds, path, obj)?)),
        T::Unsigned(IntSize::U4) => Arc::new(UInt32Array::from(read_all::<u32>(ds, path, obj)?)),
        T::Unsigned(IntSize::U8) => Arc::new(UInt64Array::from(read_all::<u64>(ds, path, obj)?)),
        T::Float(FloatSize::U4) => Arc::new(Float32Array::from(read_all::<f32>(ds, path, obj)?)),
        T::Float(FloatSize::U8) => Arc::new(Float64Array::from(read_all::<f64>(ds, path, obj)?)),
        T::Boolean => Arc::new(BooleanArray::from(read_all::<bool>(ds, path, obj)?)),
        t if is_string(t) => Arc::new(StringArray::from(read_strings(ds, path, obj)?)),
        other => {
            return Err(Error::unsupported(
                path,
                obj,
                format!("column dtype {} is not supported", dtype_name(other)),
            ))
        }
    })
}

/// Category labels: strings, or numbers/bools rendered as text (pandas allows both).
fn read_category_values(ds: &Dataset, path: &std::path::Path, obj: &str) -> Result<Vec<String>> {
    let desc = dtype(ds, path, obj)?;
    if is_string(&desc) {
        return read_strings(ds, path, obj);
    }
    let arr = plain_array(ds, &desc, path, obj)?;
    Ok((0..arr.len()).map(|i| scalar_text(&arr, i)).collect())
}

/// Text of one non-string value, as pandas prints it for whole floats (`1.0`) and bools (`True`).
fn scalar_text(arr: &ArrayRef, i: usize) -> String {
    use arrow::array::AsArray;
    use arrow::datatypes as dt;
    match arr.data_type() {
        DataType::Boolean => if arr.as_boolean().value(i) {
            "True"
        } else {
            "False"
        }
        .to_string(),
        DataType::Float32 => format!("{:?}", arr.as_primitive::<dt::Float32Type>().value(i)),
        DataType::Float64 => format!("{:?}", arr.as_primitive::<dt::Float64Type>().value(i)),
        _ => arrow::util::display::array_value_to_string(arr, i).unwrap_or_default(),
    }
}

/// A dictionary array from pandas codes (negative = missing) and category labels.
fn categorical(
    codes: &[i64],
    cats: Vec<String>,
    path: &std::path::Path,
    obj: &str,
) -> Result<ArrayRef> {
    let n = cats.len() as i64;
    let mut keys = Vec::with_capacity(codes.len());
    for (row, &c) in codes.iter().enumerate() {
        if c == -1 {
            keys.push(None);
        } else if c < 0 || c >= n {
            return Err(Error::h5ad(
                path,
                obj,
                format!("categorical code {c} at row {row} is outside the {n} categories"),
            ));
        } else {
            keys.push(Some(c as i32));
        }
    }
    let dict = DictionaryArray::<Int32Type>::try_new(
        Int32Array::from(keys),
        Arc::new(StringArray::from(cats)),
    )?;
    Ok(Arc::new(dict))
}

/// The text of every row of a string, categorical or numeric array; nulls are refused.
fn to_strings(arr: &ArrayRef, path: &std::path::Path, obj: &str) -> Result<Vec<String>> {
    use arrow::array::AsArray;
    if let Some(i) = (0..arr.len()).find(|&i| arr.is_null(i)) {
        return Err(Error::h5ad(
            path,
            obj,
            format!("missing value at row {i} where names are required"),
        ));
    }
    Ok(match arr.data_type() {
        DataType::Utf8 => arr
            .as_string::<i32>()
            .iter()
            .map(|s| s.unwrap_or_default().to_string())
            .collect(),
        DataType::Dictionary(_, _) => {
            let d = arr.as_dictionary::<Int32Type>();
            let vals = d.values().as_string::<i32>();
            d.keys()
                .iter()
                .map(|k| vals.value(k.unwrap_or_default() as usize).to_string())
                .collect()
        }
        _ => (0..arr.len()).map(|i| scalar_text(arr, i)).collect(),
    })
}

/// The var index, or the string/categorical column `column`, of dataframe `object`.
pub(crate) fn gene_names(h5: &H5ad, object: &str, column: Option<&str>) -> Result<Vec<String>> {
    match column {
        None => Ok(read_frame(h5, object, Some(&[]))?.index),
        Some(col) => {
            let frame = read_frame(h5, object, Some(&[col.to_string()]))?;
            let Some((_, arr)) = frame.columns.into_iter().find(|(n, _)| n == col) else {
                return Err(Error::invalid_input(format!(
                    "no column {col:?} to take gene names from"
                ))
                .with_path(h5.path())
                .with_object(object));
            };
            let obj = join(object, col);
            if !matches!(arr.data_type(), DataType::Utf8 | DataType::Dictionary(_, _)) {
                return Err(Error::invalid_input(format!(
                    "gene names must be a string or categorical column, found {}",
                    arr.data_type()
                ))
                .with_path(h5.path())
                .with_object(obj));
            }
            to_strings(&arr, h5.path(), &obj)
        }
    }
}

/// Names of the ordered categorical columns of a dataframe (attribute inspection only).
pub(crate) fn ordered_categoricals(h5: &H5ad, object: &str) -> Result<Vec<String>> {
    let Some(FrameNode::Group(g)) = open_frame(h5, object)? else {
        return Ok(Vec::new());
    };
    let names = g.member_names().map_err(|e| h5err(h5.path(), object, e))?;
    let mut out = Vec::new();
    for name in names {
        let ordered = match open_node(&g, &name, h5.path(), &join(object, &name))? {
            Some(Node::Group(sub)) if encoding_type(&sub).as_deref() == Some("categorical") => {
                attr_bool(&sub, "ordered").unwrap_or(false)
            }
            Some(Node::Dataset(ds)) if ds.attr("categories").is_ok() => {
                match open_node(&g, &format!("__categories/{name}"), h5.path(), object)? {
                    Some(Node::Dataset(c)) => attr_bool(&c, "ordered").unwrap_or(false),
                    _ => false,
                }
            }
            _ => false,
        };
        if ordered {
            out.push(name);
        }
    }
    Ok(out)
}

/// `obsm/KEY` as row-major f64 plus its column count.
pub(crate) fn obsm(h5: &H5ad, key: &str) -> Result<Option<(usize, Vec<f64>)>> {
    let path = h5.path();
    let obj = format!("/obsm/{key}");
    let root: &Group = &h5.file;
    let n_obs = frame_len(h5, "/obs")?;
    let (cols, values) = match open_node(root, "obsm", path, "/obsm")? {
        None => return Ok(None),
        Some(Node::Group(g)) => {
            match open_node(&g, key, path, &obj)? {
                None => return Ok(None),
                Some(Node::Group(sub)) => {
                    let enc = encoding_type(&sub).unwrap_or_else(|| "group".to_string());
                    return Err(Error::unsupported(
                    path,
                    obj,
                    format!("obsm entry of encoding {enc:?} is not supported (a numeric 2-D array is)"),
                ));
                }
                Some(Node::Dataset(ds)) => {
                    match encoding_type(&ds).as_deref() {
                        None | Some("array") => {}
                        Some(other) => {
                            return Err(Error::unsupported(
                                path,
                                obj,
                                format!("obsm entry of encoding {other:?} is not supported"),
                            ))
                        }
                    }
                    let desc = dtype(&ds, path, &obj)?;
                    if !is_numeric(&desc) {
                        return Err(Error::unsupported(
                            path,
                            obj,
                            format!(
                                "obsm entry of dtype {} is not supported (numbers are)",
                                dtype_name(&desc)
                            ),
                        ));
                    }
                    let shape = ds.shape();
                    let cols = match shape.len() {
                        1 => 1,
                        2 => shape[1],
                        n => {
                            return Err(Error::unsupported(
                                path,
                                obj,
                                format!("obsm entry with {n} dimensions is not supported"),
                            ))
                        }
                    };
                    (cols, read_all::<f64>(&ds, path, &obj)?)
                }
            }
        }
        Some(Node::Dataset(ds)) => {
            // Pre-0.7: one compound dataset whose fields are fixed-size arrays.
            let TypeDescriptor::Compound(ct) = dtype(&ds, path, "/obsm")? else {
                return Err(Error::h5ad(
                    path,
                    "/obsm",
                    "expected a group or a compound dataset",
                ));
            };
            let Some(field) = ct.fields.iter().find(|f| f.name == key) else {
                return Ok(None);
            };
            check_filters(&ds, path, "/obsm")?;
            let obj = format!("/obsm[{key}]");
            match &field.ty {
                TypeDescriptor::FixedArray(base, k) if is_numeric(base) => {
                    (*k, read_field_array_f64(&ds, key, *k, path, &obj)?)
                }
                t if is_numeric(t) => (1, read_field_as::<f64>(&ds, key, path, &obj)?),
                other => {
                    return Err(Error::unsupported(
                        path,
                        obj,
                        format!("obsm field of dtype {} is not supported", dtype_name(other)),
                    ))
                }
            }
        }
    };
    if let (Some(n), Some(rows)) = (n_obs, values.len().checked_div(cols)) {
        if rows as u64 != n {
            return Err(Error::h5ad(
                path,
                obj,
                format!("has {rows} rows but obs has {n}"),
            ));
        }
    }
    Ok(Some((cols, values)))
}
