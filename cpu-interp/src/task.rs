//! Hardware task switching through TSS descriptors and task gates (Intel SDM Vol. 3A §7.3).
//!
//! Owned by SYS.
