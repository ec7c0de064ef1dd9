package netmesh

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// TableName is Warren's own nftables table (family inet). Warren reads and
// writes no other table.
const TableName = "warren"

// Chains of table warren owned by this file. vip.go keeps its own chains
// and maps (service DNAT, hairpin and routing-mesh masquerade) next to
// these; ensureTable never flushes them, so VIPs keep working while the
// node restarts.
const (
	chainPostrouting = "postrouting"
	chainForward     = "forward"
)

func warrenTable() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}
}

// ensureTable creates table inet warren if missing and rewrites the rules of
// the chains this file owns, in one batch: the kernel applies a batch
// atomically, so there is never a moment with the chain flushed but the
// masquerade rule not yet back. Chains other code adds to the table are
// left alone.
func ensureTable(subnet netip.Prefix, bridge string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	t := c.AddTable(warrenTable())

	post := c.AddChain(&nftables.Chain{
		Name:     chainPostrouting,
		Table:    t,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
	})
	c.FlushChain(post)
	for _, r := range postroutingRules(subnet, bridge) {
		r.Table, r.Chain = t, post
		c.AddRule(r)
	}

	accept := nftables.ChainPolicyAccept
	fwd := c.AddChain(&nftables.Chain{
		Name:     chainForward,
		Table:    t,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookForward,
		Priority: nftables.ChainPriorityFilter,
		Policy:   &accept,
	})
	c.FlushChain(fwd)
	for _, r := range forwardRules(bridge) {
		r.Table, r.Chain = t, fwd
		c.AddRule(r)
	}

	if err := c.Flush(); err != nil {
		return fmt.Errorf("apply nftables table inet %s: %w; if the table was changed by hand, delete it with `nft delete table inet %s` and restart warren", TableName, err, TableName)
	}
	return nil
}

// deleteTable removes table inet warren if it exists.
func deleteTable() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("list nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name != TableName {
			continue
		}
		c.DelTable(t)
		if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete nftables table inet %s: %w", TableName, err)
		}
	}
	return nil
}

// postroutingRules masquerades task traffic that leaves the node, so
// replies find their way back to the node's own address. Traffic into the
// WireGuard mesh keeps the task's address: the other node routes it back
// through the mesh, and a masqueraded source would be outside the sender's
// subnet, which the peer's allowed IPs drop. The masquerades VIP traffic
// needs (hairpin, routing mesh) are in vip.go's own chain vip-postrouting.
func postroutingRules(subnet netip.Prefix, bridge string) []*nftables.Rule {
	exprs := matchIPv4Saddr(subnet)
	exprs = append(exprs,
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(bridge)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(DefaultMeshInterface)},
		&expr.Masq{},
	)
	return []*nftables.Rule{{Exprs: exprs, UserData: comment("warren: masquerade tasks leaving the node")}}
}

// forwardRules decide what the node forwards to its tasks. Accepted:
//
//   - replies and related packets of connections already accepted
//     (ct state established,related);
//   - connections DNATed to a task: published ports and VIPs (ct status
//     dnat), whatever interface they came in by;
//   - anything tasks send (iifname bridge): to each other (bridged frames
//     pass this hook with the bridge as both interfaces when bridge
//     netfilter is on), to other nodes' tasks, to the outside;
//   - the mesh into the bridge: other nodes' tasks, and their routing mesh
//     towards a task here. WireGuard admits from a peer only sources in
//     that peer's task subnet.
//
// Any other new connection to a task, or into the mesh, is dropped: an L2
// neighbour on the host's network that routes the task subnet via this
// node would otherwise reach every task port, published or not. The chain
// policy stays accept, so forwarding that has nothing to do with Warren's
// bridge and mesh is left to the host's own rules.
//
// The accepts do not undo a drop in another table (in nftables a drop in
// any base chain is final, an accept only ends this chain), so on hosts
// with a forward policy of drop elsewhere, the admin still has to allow the
// bridge there.
func forwardRules(bridge string) []*nftables.Rule {
	meta := func(key expr.MetaKey, op expr.CmpOp, name string) []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: key, Register: 1},
			&expr.Cmp{Op: op, Register: 1, Data: ifname(name)},
		}
	}
	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	drop := &expr.Verdict{Kind: expr.VerdictDrop}
	established := []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		accept,
	}
	return []*nftables.Rule{
		{Exprs: established, UserData: comment("warren: replies")},
		{Exprs: append(matchCtDNAT(), accept), UserData: comment("warren: published ports and VIPs")},
		{Exprs: append(meta(expr.MetaKeyIIFNAME, expr.CmpOpEq, bridge), accept), UserData: comment("warren: from tasks")},
		{Exprs: append(append(meta(expr.MetaKeyIIFNAME, expr.CmpOpEq, DefaultMeshInterface), meta(expr.MetaKeyOIFNAME, expr.CmpOpEq, bridge)...), accept),
			UserData: comment("warren: from other nodes' tasks")},
		{Exprs: append(meta(expr.MetaKeyOIFNAME, expr.CmpOpEq, bridge), drop), UserData: comment("warren: nothing else to tasks")},
		{Exprs: append(meta(expr.MetaKeyOIFNAME, expr.CmpOpEq, DefaultMeshInterface), drop), UserData: comment("warren: nothing else into the mesh")},
	}
}

// matchIPv4Saddr is `ip saddr <p>` in an inet table: the nfproto check
// first, since the payload offset only means the source address in IPv4.
// Byte-aligned prefixes compare fewer bytes instead of masking, as nft does.
func matchIPv4Saddr(p netip.Prefix) []expr.Any {
	addr := p.Masked().Addr().As4()
	out := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
	}
	if p.Bits()%8 == 0 {
		n := uint32(p.Bits() / 8)
		return append(out,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: n},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr[:n]},
		)
	}
	mask := netip.PrefixFrom(netip.AddrFrom4([4]byte{0xff, 0xff, 0xff, 0xff}), p.Bits()).Masked().Addr().As4()
	return append(out,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask[:], Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr[:]},
	)
}

// ifname pads an interface name to IFNAMSIZ, as the kernel compares the
// whole buffer: this is an exact match, not a prefix match.
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

func comment(s string) []byte {
	return userdata.AppendString(nil, userdata.TypeComment, s)
}
