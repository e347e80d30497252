//! Where the buffers of a batch are written.
//!
//! Normally in buffers that go back to their [`Gatherer`](super::Gatherer) when the last reader
//! of a batch drops them, so that the next batch is written into memory that is already
//! mapped. A fresh megabyte-sized allocation costs a page fault per 4 KiB page on first touch
//! (and the allocator may hand the pages back to the kernel on free, with a TLB shootdown
//! across the loader's threads): on a 50,000 x 20,000 corpus that was 60 to 110 faults per
//! batch of 256 cells. A pooled buffer is faulted in once. The pool only keeps buffers that
//! were alive at the same time before, so it never holds more memory than the loader's peak;
//! buffers dropped after the pool is gone are freed as usual.
//!
//! A [`Region`] is the other place: memory the embedder owns, such as a slot of the
//! shared-memory ring through which a `DataLoader` worker hands batches to the training
//! process, so that the batch is gathered where its reader will find it instead of being
//! copied there afterwards.

use std::ptr::NonNull;
use std::sync::{Arc, Mutex, Weak};

use arrow::alloc::Allocation;
use arrow::buffer::{Buffer, ScalarBuffer};
use arrow::datatypes::ArrowNativeType;

/// Free buffers kept per element type: enough for a prefetch queue of 8, the gathering
/// threads and a few batches held by the consumer.
const SHELVED: usize = 16;

/// Alignment of the buffers placed in a [`Region`] (a cache line; Arrow asks for 8 at most).
const REGION_ALIGN: usize = 64;

/// Free buffers by element type.
#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    u16: Mutex<Vec<Vec<u16>>>,
    u32: Mutex<Vec<Vec<u32>>>,
    u64: Mutex<Vec<Vec<u64>>>,
    i32: Mutex<Vec<Vec<i32>>>,
    f32: Mutex<Vec<Vec<f32>>>,
    f64: Mutex<Vec<Vec<f64>>>,
}

/// An element type the pool keeps buffers of.
pub(crate) trait Pooled: ArrowNativeType + std::panic::RefUnwindSafe {
    fn shelf(pool: &BufferPool) -> &Mutex<Vec<Vec<Self>>>;
}

macro_rules! pooled {
    ($($t:ident),*) => {$(
        impl Pooled for $t {
            fn shelf(pool: &BufferPool) -> &Mutex<Vec<Vec<$t>>> {
                &pool.$t
            }
        }
    )*};
}
pooled!(u16, u32, u64, i32, f32, f64);

/// Memory the caller lends to one batch: its buffers are placed one after the other (each
/// aligned to 64 bytes) for as long as they fit, the others come from the gatherer's pool.
///
/// The batch's Arrow buffers keep `owner` alive; the memory must stay valid, and must not be
/// written by anyone else, until the last of them is dropped.
pub struct Region {
    base: NonNull<u8>,
    len: usize,
    used: usize,
    owner: Arc<dyn Allocation>,
}

// SAFETY: a region is a plain range of memory that its creator vouched for (see `new`); it is
// only written through the buffers it hands out, which do not overlap.
unsafe impl Send for Region {}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("base", &self.base)
            .field("len", &self.len)
            .field("used", &self.used)
            .finish()
    }
}

impl Region {
    /// `len` bytes at `base`, kept alive by `owner`.
    ///
    /// # Safety
    /// `base..base + len` must be writable memory that stays mapped while `owner` (or a clone
    /// of it) lives, and that nothing else reads or writes while the batch is being gathered
    /// nor writes while any buffer of the batch lives.
    pub unsafe fn new(base: NonNull<u8>, len: usize, owner: Arc<dyn Allocation>) -> Region {
        Region {
            base,
            len,
            used: 0,
            owner,
        }
    }

    /// Bytes from the start of the region up to the end of the last buffer placed in it.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Room for `n` elements of `T`, or `None` when they do not fit.
    fn take<T: Pooled>(&mut self, n: usize) -> Option<OutBuf<T>> {
        let size = std::mem::size_of::<T>();
        let addr = self.base.as_ptr() as usize;
        let start =
            (addr + self.used).next_multiple_of(REGION_ALIGN.max(std::mem::align_of::<T>())) - addr;
        let end = start.checked_add(n.checked_mul(size)?)?;
        if end > self.len {
            return None;
        }
        self.used = end;
        // SAFETY: `start <= end <= len`, so the pointer stays inside the region.
        let ptr = unsafe { self.base.add(start) }.cast::<T>();
        Some(OutBuf {
            ptr,
            len: 0,
            cap: n,
            home: Home::Region(self.owner.clone()),
        })
    }
}

/// A buffer being written by a gather: room for a fixed number of elements, written in order.
/// Writing past that room is a bug in the gather's sizing and panics.
pub(crate) struct OutBuf<T: Pooled> {
    ptr: NonNull<T>,
    len: usize,
    cap: usize,
    home: Home<T>,
}

enum Home<T> {
    /// A pooled vector (length 0 until [`BufferPool::buffer`]); `ptr` is its heap block.
    Pool(Vec<T>),
    Region(Arc<dyn Allocation>),
}

impl<T: Pooled> OutBuf<T> {
    #[inline]
    fn room(&mut self, n: usize) -> *mut T {
        assert!(
            n <= self.cap - self.len,
            "a batch buffer sized for {} elements received {}",
            self.cap,
            self.len + n
        );
        // SAFETY: `len + n <= cap`, inside the buffer.
        unsafe { self.ptr.as_ptr().add(self.len) }
    }

    /// Appends one element.
    #[inline]
    pub(crate) fn push(&mut self, x: T) {
        let dst = self.room(1);
        // SAFETY: `room` checked there is space for one element at `dst`.
        unsafe { dst.write(x) };
        self.len += 1;
    }

    /// Appends a copy of `s`.
    #[inline]
    pub(crate) fn extend_from_slice(&mut self, s: &[T]) {
        let dst = self.room(s.len());
        // SAFETY: `room` checked there is space for `s.len()` elements at `dst`; a buffer being
        // written never overlaps the slices it copies from (the corpus mapping).
        unsafe { std::ptr::copy_nonoverlapping(s.as_ptr(), dst, s.len()) };
        self.len += s.len();
    }

    /// Appends `f` of each element of `s`.
    #[inline]
    pub(crate) fn extend_map<S: Copy>(&mut self, s: &[S], f: impl Fn(S) -> T) {
        let dst = self.room(s.len());
        for (k, &x) in s.iter().enumerate() {
            // SAFETY: `room` checked there is space for `s.len()` elements at `dst`.
            unsafe { dst.add(k).write(f(x)) };
        }
        self.len += s.len();
    }

    /// Appends `n` copies of `x`.
    pub(crate) fn fill(&mut self, n: usize, x: T) {
        let dst = self.room(n);
        for k in 0..n {
            // SAFETY: `room` checked there is space for `n` elements at `dst`.
            unsafe { dst.add(k).write(x) };
        }
        self.len += n;
    }

    /// The elements written so far.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: the first `len` elements were written, and this buffer is their only owner.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl BufferPool {
    /// Room for `capacity` elements: the smallest free buffer that fits, else a new one with a
    /// quarter of headroom so that later, slightly larger batches fit too.
    pub(crate) fn take<T: Pooled>(&self, capacity: usize) -> OutBuf<T> {
        let mut shelf = T::shelf(self).lock().unwrap_or_else(|p| p.into_inner());
        let best = shelf
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= capacity)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i);
        let mut v = match best {
            Some(i) => {
                let mut v = shelf.swap_remove(i);
                v.clear();
                v
            }
            None => Vec::with_capacity(capacity + capacity / 4),
        };
        drop(shelf);
        // A Vec's pointer is never null (dangling but aligned when it has no heap block).
        let ptr = NonNull::new(v.as_mut_ptr()).expect("Vec pointers are non-null");
        OutBuf {
            ptr,
            len: 0,
            cap: capacity,
            home: Home::Pool(v),
        }
    }

    /// Room for `capacity` elements in `region` when they fit there, else from the pool.
    pub(crate) fn take_in<T: Pooled>(
        &self,
        region: Option<&mut Region>,
        capacity: usize,
    ) -> OutBuf<T> {
        match region.and_then(|r| r.take(capacity)) {
            Some(b) => b,
            None => self.take(capacity),
        }
    }

    /// Shelves a buffer; with a full shelf it replaces the smallest one, if smaller.
    fn give<T: Pooled>(&self, v: Vec<T>) {
        if v.capacity() == 0 {
            return;
        }
        let mut shelf = T::shelf(self).lock().unwrap_or_else(|p| p.into_inner());
        if shelf.len() < SHELVED {
            shelf.push(v);
        } else if let Some((i, _)) = shelf
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| s.capacity())
            .filter(|(_, s)| s.capacity() < v.capacity())
        {
            shelf[i] = v;
        }
    }

    /// An Arrow buffer over what was written to `out`, with no copy; a pooled buffer comes
    /// back to this pool when Arrow drops it.
    pub(crate) fn buffer<T: Pooled>(self: &Arc<Self>, out: OutBuf<T>) -> ScalarBuffer<T> {
        let OutBuf { ptr, len, home, .. } = out;
        let bytes = len * std::mem::size_of::<T>();
        let owner: Arc<dyn Allocation> = match home {
            Home::Pool(mut vec) => {
                // SAFETY: the first `len` elements of the vector's block were written through
                // `ptr` (its pointer) and `len` is within its capacity.
                unsafe { vec.set_len(len) };
                Arc::new(Lease {
                    vec,
                    home: Arc::downgrade(self),
                })
            }
            Home::Region(owner) => owner,
        };
        // SAFETY: `ptr` points to `bytes` initialised bytes that `owner` keeps in place (a
        // vector's heap block does not move with the vector; a region's memory stays valid
        // while its owner lives) and that nothing writes before `owner` is dropped, which
        // Arrow does only after its last reference to the buffer is gone.
        let buffer = unsafe { Buffer::from_custom_allocation(ptr.cast(), bytes, owner) };
        ScalarBuffer::new(buffer, 0, len)
    }
}

/// Owns a pooled vector while Arrow buffers point into it.
struct Lease<T: Pooled> {
    vec: Vec<T>,
    home: Weak<BufferPool>,
}

impl<T: Pooled> Drop for Lease<T> {
    fn drop(&mut self) {
        if let Some(pool) = self.home.upgrade() {
            pool.give(std::mem::take(&mut self.vec));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_buffer_is_reused_without_a_new_allocation() {
        let pool = Arc::new(BufferPool::default());
        let mut v = pool.take::<u16>(1000);
        v.extend_map(&(0..1000u32).collect::<Vec<_>>(), |x| x as u16);
        let first = v.ptr;
        let buf = pool.buffer(v);
        assert_eq!(buf.len(), 1000);
        assert_eq!(buf[999], 999);
        let clone = buf.clone();
        drop(buf);
        // Still referenced: the next take must not hand out the same memory.
        let other = pool.take::<u16>(1000);
        assert_ne!(other.ptr, first);
        drop(clone);
        let again = pool.take::<u16>(900);
        assert_eq!(again.ptr, first);
        assert_eq!((again.len, again.cap), (0, 900));
    }

    #[test]
    fn the_smallest_fitting_buffer_is_chosen_and_types_do_not_mix() {
        let pool = Arc::new(BufferPool::default());
        let held: Vec<_> = [10usize, 1000, 100]
            .into_iter()
            .map(|n| pool.buffer(pool.take::<f32>(n)))
            .collect();
        drop(held);
        let capacity = |b: &OutBuf<f32>| match &b.home {
            Home::Pool(v) => v.capacity(),
            Home::Region(_) => unreachable!("no region here"),
        };
        assert_eq!(capacity(&pool.take::<f32>(50)), 125);
        assert_eq!(capacity(&pool.take::<f32>(50)), 1250);
        // Nothing on the f64 shelf: a new buffer with headroom.
        assert!(pool.f64.lock().unwrap().is_empty());
    }

    #[test]
    fn a_full_shelf_keeps_the_largest_buffers() {
        let pool = Arc::new(BufferPool::default());
        let held: Vec<_> = (1..=SHELVED + 4)
            .map(|n| pool.buffer(pool.take::<u64>(n * 100)))
            .collect();
        drop(held);
        let shelf = pool.u64.lock().unwrap();
        assert_eq!(shelf.len(), SHELVED);
        assert!(shelf.iter().all(|v| v.capacity() > 500));
    }

    #[test]
    fn buffers_outliving_the_pool_are_freed() {
        let pool = Arc::new(BufferPool::default());
        let mut v = pool.take::<i32>(4);
        v.extend_from_slice(&[1, 2, 3, 4]);
        let buf = pool.buffer(v);
        drop(pool);
        assert_eq!(buf.iter().sum::<i32>(), 10);
    }

    #[test]
    #[should_panic(expected = "sized for 2 elements")]
    fn writing_past_the_room_of_a_buffer_panics() {
        let pool = Arc::new(BufferPool::default());
        let mut v = pool.take::<u32>(2);
        v.extend_from_slice(&[1, 2, 3]);
    }

    /// A 512-byte region aligned to 64 bytes inside `memory` (at least 72 words), and its owner.
    fn region(memory: &mut [u64]) -> (Region, Arc<Vec<u8>>) {
        let owner = Arc::new(Vec::<u8>::new());
        let skip = memory.as_ptr().align_offset(REGION_ALIGN);
        let base = NonNull::new(memory[skip..].as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: `memory` outlives every buffer of these tests, which drop them first.
        let r = unsafe { Region::new(base, 512, owner.clone()) };
        (r, owner)
    }

    #[test]
    fn buffers_are_placed_in_a_region_while_they_fit_then_come_from_the_pool() {
        let pool = Arc::new(BufferPool::default());
        let mut memory = vec![0u64; 72];
        let (mut r, owner) = region(&mut memory);
        let base = r.base.as_ptr() as usize;
        let mut a = pool.take_in::<u32>(Some(&mut r), 10);
        a.extend_from_slice(&[7; 10]);
        let mut b = pool.take_in::<f64>(Some(&mut r), 20);
        b.fill(20, 1.5);
        // 40 bytes, then 160 from the next 64-byte boundary: 64 + 160 = 224 used.
        assert_eq!(r.used(), 224);
        let c = pool.take_in::<u64>(Some(&mut r), 64); // 512 bytes do not fit any more
        assert_eq!(r.used(), 224);
        assert!(matches!(c.home, Home::Pool(_)));
        let (a, b) = (pool.buffer(a), pool.buffer(b));
        let addr = |p: *const u8| p as usize - base;
        assert_eq!(addr(a.inner().as_ptr()) % REGION_ALIGN, 0);
        assert_eq!(addr(b.inner().as_ptr()), 64);
        assert_eq!(a.iter().sum::<u32>(), 70);
        assert_eq!(b.iter().sum::<f64>(), 30.0);
        // The region, both buffers and the test hold the owner; the buffers let go of it.
        assert_eq!(Arc::strong_count(&owner), 4);
        drop((a, b, r));
        assert_eq!(Arc::strong_count(&owner), 1);
        drop(c);
        assert!(memory.iter().any(|&w| w != 0));
    }
}
