//! Kernel ABI of AF_XDP and the parts of bpf(2) vwire uses, from `linux/if_xdp.h` and
//! `linux/bpf.h`. Layouts are checked by size assertions.

#![allow(missing_docs)] // the names are the kernel's; see the headers named above

pub const AF_XDP: i32 = 44;
/// `AF_XDP` as the `sa_family_t` of a sockaddr.
pub const AF_XDP_FAMILY: u16 = 44;
pub const SOL_XDP: i32 = 283;

// setsockopt/getsockopt names (SOL_XDP)
pub const XDP_MMAP_OFFSETS: i32 = 1;
pub const XDP_RX_RING: i32 = 2;
pub const XDP_TX_RING: i32 = 3;
pub const XDP_UMEM_REG: i32 = 4;
pub const XDP_UMEM_FILL_RING: i32 = 5;
pub const XDP_UMEM_COMPLETION_RING: i32 = 6;
pub const XDP_STATISTICS: i32 = 7;
/// Kernel ≥ 6.17: frames sent per copy-mode TX kick (default 32).
pub const XDP_MAX_TX_SKB_BUDGET: i32 = 9;

// sockaddr_xdp.sxdp_flags
pub const XDP_SHARED_UMEM: u16 = 1 << 0;
pub const XDP_COPY: u16 = 1 << 1;
pub const XDP_ZEROCOPY: u16 = 1 << 2;
pub const XDP_USE_NEED_WAKEUP: u16 = 1 << 3;

// ring flags word
pub const XDP_RING_NEED_WAKEUP: u32 = 1 << 0;

// mmap page offsets
pub const XDP_PGOFF_RX_RING: i64 = 0;
pub const XDP_PGOFF_TX_RING: i64 = 0x8000_0000;
pub const XDP_UMEM_PGOFF_FILL_RING: i64 = 0x1_0000_0000;
pub const XDP_UMEM_PGOFF_COMPLETION_RING: i64 = 0x1_8000_0000;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockaddrXdp {
    pub family: u16,
    pub flags: u16,
    pub ifindex: u32,
    pub queue_id: u32,
    pub shared_umem_fd: u32,
}
const _: () = assert!(std::mem::size_of::<SockaddrXdp>() == 16);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RingOffset {
    pub producer: u64,
    pub consumer: u64,
    pub desc: u64,
    pub flags: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MmapOffsets {
    pub rx: RingOffset,
    pub tx: RingOffset,
    pub fr: RingOffset,
    pub cr: RingOffset,
}
const _: () = assert!(std::mem::size_of::<MmapOffsets>() == 128);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UmemReg {
    pub addr: u64,
    pub len: u64,
    pub chunk_size: u32,
    pub headroom: u32,
    pub flags: u32,
    pub tx_metadata_len: u32,
}
const _: () = assert!(std::mem::size_of::<UmemReg>() == 32);

/// A descriptor of the RX and TX rings.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpDesc {
    pub addr: u64,
    pub len: u32,
    pub options: u32,
}
const _: () = assert!(std::mem::size_of::<XdpDesc>() == 16);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpStatistics {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}
const _: () = assert!(std::mem::size_of::<XdpStatistics>() == 48);

// bpf(2)
pub const BPF_MAP_CREATE: i64 = 0;
pub const BPF_MAP_LOOKUP_ELEM: i64 = 1;
pub const BPF_MAP_UPDATE_ELEM: i64 = 2;
pub const BPF_MAP_DELETE_ELEM: i64 = 3;
pub const BPF_MAP_GET_NEXT_KEY: i64 = 4;
pub const BPF_PROG_LOAD: i64 = 5;
pub const BPF_PROG_ATTACH: i64 = 8;
pub const BPF_PROG_DETACH: i64 = 9;
pub const BPF_PROG_GET_FD_BY_ID: i64 = 13;
pub const BPF_MAP_GET_FD_BY_ID: i64 = 14;
pub const BPF_OBJ_GET_INFO_BY_FD: i64 = 15;
pub const BPF_PROG_QUERY: i64 = 16;
pub const BPF_LINK_CREATE: i64 = 28;
pub const BPF_MAP_TYPE_HASH: u32 = 1;
pub const BPF_MAP_TYPE_XSKMAP: u32 = 17;
/// map_flags: hash elements are allocated on update and freed after an RCU grace period.
pub const BPF_F_NO_PREALLOC: u32 = 1 << 0;
pub const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
pub const BPF_PROG_TYPE_XDP: u32 = 6;
pub const BPF_XDP: u32 = 37;
/// Linux ≥ 6.6 (`enum bpf_attach_type`): the TCX hooks.
pub const BPF_TCX_INGRESS: u32 = 46;
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// `union bpf_attr` for BPF_MAP_CREATE (prefix; the rest must be zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MapCreateAttr {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub inner_map_fd: u32,
    pub numa_node: u32,
    pub map_name: [u8; 16],
}

/// `union bpf_attr` for BPF_MAP_{LOOKUP,UPDATE,DELETE}_ELEM and BPF_MAP_GET_NEXT_KEY (where
/// `value` is `next_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MapElemAttr {
    pub map_fd: u32,
    pub _pad: u32,
    pub key: u64,
    pub value: u64,
    pub flags: u64,
}

/// `union bpf_attr` for BPF_PROG_LOAD (prefix).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProgLoadAttr {
    pub prog_type: u32,
    pub insn_cnt: u32,
    pub insns: u64,
    pub license: u64,
    pub log_level: u32,
    pub log_size: u32,
    pub log_buf: u64,
    pub kern_version: u32,
    pub prog_flags: u32,
    pub prog_name: [u8; 16],
    pub prog_ifindex: u32,
    pub expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_LINK_CREATE (prefix).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkCreateAttr {
    pub prog_fd: u32,
    pub target_ifindex: u32,
    pub attach_type: u32,
    pub flags: u32,
}

/// `union bpf_attr` for BPF_PROG_ATTACH and BPF_PROG_DETACH (Linux ≥ 6.6 layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProgAttachAttr {
    pub target_ifindex: u32,
    pub attach_bpf_fd: u32,
    pub attach_type: u32,
    pub attach_flags: u32,
    pub replace_bpf_fd: u32,
    pub relative_fd: u32,
    pub expected_revision: u64,
}
const _: () = assert!(std::mem::size_of::<ProgAttachAttr>() == 32);

/// `union bpf_attr` for BPF_PROG_QUERY (Linux ≥ 6.6 layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProgQueryAttr {
    pub target_ifindex: u32,
    pub attach_type: u32,
    pub query_flags: u32,
    pub attach_flags: u32,
    pub prog_ids: u64,
    pub count: u32,
    pub _pad: u32,
    pub prog_attach_flags: u64,
    pub link_ids: u64,
    pub link_attach_flags: u64,
    pub revision: u64,
}
const _: () = assert!(std::mem::size_of::<ProgQueryAttr>() == 64);

/// `union bpf_attr` for BPF_PROG_GET_FD_BY_ID and BPF_MAP_GET_FD_BY_ID.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GetFdByIdAttr {
    pub id: u32,
    pub next_id: u32,
    pub open_flags: u32,
}

/// `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ObjInfoAttr {
    pub bpf_fd: u32,
    pub info_len: u32,
    pub info: u64,
}

/// `struct bpf_prog_info` (prefix up to `map_ids`; the kernel fills what fits `info_len`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProgInfo {
    pub prog_type: u32,
    pub id: u32,
    pub tag: [u8; 8],
    pub jited_prog_len: u32,
    pub xlated_prog_len: u32,
    pub jited_prog_insns: u64,
    pub xlated_prog_insns: u64,
    pub load_time: u64,
    pub created_by_uid: u32,
    pub nr_map_ids: u32,
    pub map_ids: u64,
    pub name: [u8; 16],
}
const _: () = assert!(std::mem::offset_of!(ProgInfo, nr_map_ids) == 52);
const _: () = assert!(std::mem::offset_of!(ProgInfo, name) == 64);
const _: () = assert!(std::mem::size_of::<ProgInfo>() == 80);

/// `struct bpf_map_info` (prefix).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MapInfo {
    pub map_type: u32,
    pub id: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub name: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<MapInfo>() == 40);

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BpfInsn {
    pub code: u8,
    /// dst_reg in the low nibble, src_reg in the high nibble.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}
const _: () = assert!(std::mem::size_of::<BpfInsn>() == 8);
