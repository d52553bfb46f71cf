//! [`Latch`]: a value one task sets once and any number of tasks on the same thread await.
//! Used where one side of a pair of futures must end the other (a spliced stream's two
//! directions, an HTTP/2 link's tasks).

use std::cell::RefCell;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// A value set once by one task and awaited by others.
pub(crate) struct Latch<T> {
    value: RefCell<Option<T>>,
    wakers: RefCell<Vec<Waker>>,
}

impl<T: Clone> Latch<T> {
    pub(crate) fn new() -> Rc<Self> {
        Rc::new(Self {
            value: RefCell::new(None),
            wakers: RefCell::new(Vec::new()),
        })
    }

    pub(crate) fn set(&self, v: T) {
        self.value.borrow_mut().get_or_insert(v);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    pub(crate) async fn wait(&self) -> T {
        std::future::poll_fn(|cx| {
            if let Some(v) = self.value.borrow().as_ref() {
                return Poll::Ready(v.clone());
            }
            self.wakers.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl<T> Latch<T> {
    /// Whether the value has been set.
    pub(crate) fn is_set(&self) -> bool {
        self.value.borrow().is_some()
    }
}
