//! Shared memory: a few kilobytes per block, on the SM, that the block's threads share.
//!
//! `__shared__ float scratch[32];` is `let scratch = shared::<f32>(32);`. As in CUDA, a
//! declaration is one array per *block*, whichever thread reaches it first: every thread that
//! runs the same `shared(..)` call (the same line of source) gets the same array.
//!
//! Threads of a block do not run in lockstep, so one thread's store is visible to another only
//! after a barrier (`sync_threads().await`) that both pass. The model checks that rule instead
//! of leaving it to luck: between two barriers, an element that one thread wrote may not be read
//! or written by another, and an element that threads read may not be written by a different
//! thread. Breaking it is a *race*, reported with both threads. Reading an element no thread has
//! written yet is an error too (on the GPU it holds whatever the last block left there).
//!
//! Where it differs from the GPU: no bank conflicts are counted, and the size limit is the
//! 48 KiB a block gets without opting in (the H200 allows up to 227 KiB per block on request).

use std::any::type_name;
use std::cell::RefCell;
use std::rc::Rc;

use super::state::{with_thread, Launch, SharedDecl, Site};

/// Shared memory a block may declare, in bytes.
pub const MAX_SHARED_BYTES: usize = 48 * 1024;

/// A shared-memory array of the running block (cheap to clone: clones share the array).
pub struct Shared<T> {
    array: Rc<SharedArray<T>>,
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared {
            array: self.array.clone(),
        }
    }
}

struct SharedArray<T> {
    declared_at: Site,
    cells: RefCell<Vec<Slot<T>>>,
}

/// One element, and who touched it since the last barrier.
struct Slot<T> {
    value: Option<T>,
    /// (thread, epoch) of the last store.
    written: Option<(usize, u64)>,
    /// Who read it in the epoch given, if anyone: one thread, or several (`None`).
    read: Option<(Option<usize>, u64)>,
}

/// `__shared__ T name[len];`: the block's array declared at this line (created by the first
/// thread that gets here, the same for every thread of the block).
#[track_caller]
pub fn shared<T: Copy + 'static>(len: usize) -> Shared<T> {
    let site = std::panic::Location::caller();
    with_thread("shared()", |l, t| {
        if let Some(decl) = l.shared.get(&site) {
            assert!(
                decl.len == len && decl.type_name == type_name::<T>(),
                "{}: the shared array declared at {site} was declared by an earlier thread as \
                 [{}; {}], here as [{}; {len}]: every thread must declare the same array",
                l.whereabouts(t),
                decl.type_name,
                decl.len,
                type_name::<T>()
            );
            let array = decl.array.clone().downcast::<SharedArray<T>>();
            return Shared {
                array: array.expect("same type, checked above"),
            };
        }
        l.shared_bytes += len * std::mem::size_of::<T>();
        assert!(
            l.shared_bytes <= MAX_SHARED_BYTES,
            "{}: the shared array declared at {site} brings the block to {} bytes of shared \
             memory, more than the {MAX_SHARED_BYTES} a block may declare",
            l.whereabouts(t),
            l.shared_bytes
        );
        let cells = (0..len)
            .map(|_| Slot {
                value: None,
                written: None,
                read: None,
            })
            .collect();
        let array = Rc::new(SharedArray {
            declared_at: site,
            cells: RefCell::new(cells),
        });
        l.shared.insert(
            site,
            SharedDecl {
                array: array.clone(),
                len,
                type_name: type_name::<T>(),
            },
        );
        Shared { array }
    })
}

impl<T: Copy + 'static> Shared<T> {
    pub fn len(&self) -> usize {
        self.array.cells.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `scratch[i]`: reads element `i`, checking that no other thread wrote it since the last
    /// barrier.
    #[track_caller]
    pub fn get(&self, i: usize) -> T {
        let site = std::panic::Location::caller();
        with_thread("Shared::get", |l, t| {
            let mut cells = self.array.cells.borrow_mut();
            let cell = self.element(&mut cells, l, t, i, "read", site);
            let Some(value) = cell.value else {
                panic!(
                    "{}: reads {} at {site}, which no thread has written",
                    l.whereabouts(t),
                    self.describe(i)
                )
            };
            if let Some((writer, epoch)) = cell.written {
                if epoch == l.epoch && writer != t {
                    panic!(
                        "{}",
                        self.race(l, t, i, site, "reads", "written", Some(writer))
                    );
                }
            }
            cell.read = match cell.read {
                Some((Some(reader), epoch)) if epoch == l.epoch && reader != t => {
                    Some((None, epoch))
                }
                Some((None, epoch)) if epoch == l.epoch => Some((None, epoch)),
                _ => Some((Some(t), l.epoch)),
            };
            value
        })
    }

    /// `scratch[i] = value`: writes element `i`, checking that no other thread read or wrote it
    /// since the last barrier.
    #[track_caller]
    pub fn set(&self, i: usize, value: T) {
        let site = std::panic::Location::caller();
        with_thread("Shared::set", |l, t| {
            let mut cells = self.array.cells.borrow_mut();
            let cell = self.element(&mut cells, l, t, i, "write", site);
            if let Some((writer, epoch)) = cell.written {
                if epoch == l.epoch && writer != t {
                    panic!(
                        "{}",
                        self.race(l, t, i, site, "writes", "written", Some(writer))
                    );
                }
            }
            if let Some((reader, epoch)) = cell.read {
                if epoch == l.epoch && reader != Some(t) {
                    panic!("{}", self.race(l, t, i, site, "writes", "read", reader));
                }
            }
            cell.value = Some(value);
            cell.written = Some((t, l.epoch));
        })
    }

    fn element<'c>(
        &self,
        cells: &'c mut [Slot<T>],
        l: &Launch,
        t: usize,
        i: usize,
        what: &str,
        site: Site,
    ) -> &'c mut Slot<T> {
        let len = cells.len();
        cells.get_mut(i).unwrap_or_else(|| {
            panic!(
                "{}: {what} of {} at {site} is out of bounds: the array has {len} elements",
                l.whereabouts(t),
                self.describe(i)
            )
        })
    }

    fn describe(&self, i: usize) -> String {
        format!(
            "element {i} of the shared array declared at {}",
            self.array.declared_at
        )
    }

    /// The message of a race: this thread `doing` ("reads"/"writes") element `i`, which
    /// `other` (one thread, or several if `None`) `did` ("written"/"read") in this epoch.
    #[allow(clippy::too_many_arguments)]
    fn race(
        &self,
        l: &Launch,
        t: usize,
        i: usize,
        site: Site,
        doing: &str,
        did: &str,
        other: Option<usize>,
    ) -> String {
        let other = match other {
            Some(o) => format!("thread {} has", l.config.block.unflatten(o)),
            None => "several threads have".to_string(),
        };
        format!(
            "{}: shared-memory race: this thread {doing} {} at {site}, which {other} {did} \
             since the last barrier; put a `sync_threads().await` between the two accesses",
            l.whereabouts(t),
            self.describe(i)
        )
    }
}
