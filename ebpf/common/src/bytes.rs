//! Byte access to a packet: the one trait through which the parser, the
//! classification and the replies read packets, each hook supplying its own
//! implementation (direct packet access in XDP and TC, a slice on the host).
//! At the bottom of the crate: it imports nothing of it.

/// No header is looked for beyond this offset. A header chain that long is
/// [`Malformed::TooLong`].
pub const MAX_HEADER_OFFSET: usize = 2048;
/// The largest read the parser and the programs make at one offset.
pub const MAX_READ: usize = 40;

/// The longest range summed at once: an ICMPv6 error's quote
/// (`reply::ICMP6_QUOTE_MAX`, which is held equal to it).
pub const SUM_MAX: usize = 1232;

/// Byte access to a packet, as each hook provides it.
pub trait PacketBytes {
    /// Length of the whole packet as the hook sees it, from the Ethernet
    /// header on.
    fn packet_len(&self) -> usize;

    /// The `N` bytes at `off`, or `None` when the packet ends before
    /// `off + N` (or `off` is beyond [`MAX_HEADER_OFFSET`]).
    ///
    /// In the kernel programs, read at least 2 bytes at an offset that is
    /// not a constant: the compiler turns the check for 1 byte into
    /// `data + off >= data_end`, from which the verifier learns nothing.
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]>;

    /// `v`, as a value the BPF verifier knows nothing of (the kernel
    /// programs pass it through a per-CPU map slot; on the host it is `v`).
    ///
    /// The parser calls it where paths that differ only in the constants
    /// they carry (each VLAN depth, each IPv6 extension header) come
    /// together: the verifier then walks what follows once, not once per
    /// path. Whatever comes out is bounded again by the caller.
    #[inline(always)]
    fn forget(&self, v: usize) -> usize {
        v
    }

    /// The sum of the `len` bytes at `off` (`len` a multiple of 4, at most
    /// [`SUM_MAX`]) as big-endian 16-bit words, not folded;
    /// `None` if they are not all in the packet.
    #[inline(always)]
    fn sum_words(&self, off: usize, len: usize) -> Option<u64> {
        sum_words_by_reads(self, off, len)
    }

    /// The big-endian 16-bit word at `off`.
    #[inline(always)]
    fn be16(&self, off: usize) -> Option<u16> {
        self.bytes::<2>(off).map(u16::from_be_bytes)
    }

    /// The big-endian 32-bit word at `off`.
    #[inline(always)]
    fn be32(&self, off: usize) -> Option<u32> {
        self.bytes::<4>(off).map(u32::from_be_bytes)
    }
}

impl PacketBytes for [u8] {
    fn packet_len(&self) -> usize {
        self.len()
    }

    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        if off > MAX_HEADER_OFFSET {
            return None;
        }
        let end = off.checked_add(N)?;
        self.get(off..end)?.try_into().ok()
    }
}

/// The `N` bytes at `off` if they lie inside the IP datagram ending at
/// `end` (and inside the packet).
#[inline(always)]
pub fn bytes_within<P: PacketBytes + ?Sized, const N: usize>(
    pkt: &P,
    off: usize,
    end: usize,
) -> Option<[u8; N]> {
    if off + N > end {
        return None;
    }
    pkt.bytes::<N>(off)
}

/// The sum of the `len` bytes (a multiple of 4, at most [`SUM_MAX`]) at `off`
/// as 16-bit big-endian words, unfolded: a loop of 4-byte reads. This is
/// `PacketBytes::sum_words` unless the packet's access does better (the
/// kernel programs use a checksum helper: a loop of reads costs the verifier
/// one walk of the loop per path that reaches it).
#[inline(always)]
pub fn sum_words_by_reads<P: PacketBytes + ?Sized>(pkt: &P, off: usize, len: usize) -> Option<u64> {
    let end = off + len;
    let mut sum = 0u64;
    let mut at = off;
    for _ in 0..SUM_MAX / 4 {
        if at + 4 > end {
            break;
        }
        // A 32-bit word sums as its two halves do, modulo 0xffff.
        sum += u32::from_be_bytes(pkt.bytes::<4>(at)?) as u64;
        at += 4;
    }
    Some(sum)
}
