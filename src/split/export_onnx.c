/* bf-export --format onnx: the folded halves as ONNX graphs.
 *
 * The protobuf wire format is written by hand here. The two files need two
 * wire types (varint and length-delimited: weights go into raw_data) and
 * eight small messages, about sixty lines of encoder. protobuf-c (Debian's
 * libprotobuf-c-dev) would need onnx.proto vendored into the tree, protoc-c at
 * build time and a generated C file of thousands of lines for the whole
 * schema, and its packing copies every weight once more. Field numbers are
 * those of onnx/onnx.proto (a proto2 file: repeated ints are written
 * unpacked, as protoc does for it). */
#include "export_onnx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_core.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "TensorProto.raw_data is little-endian; this writer copies host floats as they are"
#endif

enum { ONNX_IR_VERSION = 7, ONNX_OPSET = 13 }; /* IR 7 is the version that came with opset 13 */

/* onnx.proto field numbers (message_field) and enum values */
enum {
  WT_VARINT = 0,
  WT_LEN = 2,
  MODEL_IR_VERSION = 1,
  MODEL_PRODUCER_NAME = 2,
  MODEL_PRODUCER_VERSION = 3,
  MODEL_DOC = 6,
  MODEL_GRAPH = 7,
  MODEL_OPSET_IMPORT = 8,
  MODEL_METADATA = 14,
  OPSET_VERSION = 2,
  ENTRY_KEY = 1,
  ENTRY_VALUE = 2,
  GRAPH_NODE = 1,
  GRAPH_NAME = 2,
  GRAPH_INITIALIZER = 5,
  GRAPH_INPUT = 11,
  GRAPH_OUTPUT = 12,
  NODE_INPUT = 1,
  NODE_OUTPUT = 2,
  NODE_NAME = 3,
  NODE_OP_TYPE = 4,
  NODE_ATTRIBUTE = 5,
  ATTR_NAME = 1,
  ATTR_I = 3,
  ATTR_INTS = 8,
  ATTR_TYPE = 20,
  ATTR_TYPE_INT = 2,
  ATTR_TYPE_INTS = 7,
  TENSOR_DIMS = 1,
  TENSOR_DATA_TYPE = 2,
  TENSOR_NAME = 8,
  TENSOR_RAW_DATA = 9,
  DATA_TYPE_FLOAT = 1,
  VALUE_NAME = 1,
  VALUE_TYPE = 2,
  TYPE_TENSOR = 1,
  TTYPE_ELEM = 1,
  TTYPE_SHAPE = 2,
  SHAPE_DIM = 1,
  DIM_VALUE = 1,
  DIM_PARAM = 2
};

/* A growing message body; the first failure is kept in rc and every later
 * write is skipped, so callers check once at the end. */
typedef struct pb {
  uint8_t *p;
  size_t n, cap;
  int rc;
} pb;

static void pb_put(pb *b, const void *d, size_t n) {
  if (b->rc || !n) return;
  if (b->n + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + n) cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) {
      b->rc = bf_error(BF_ENOMEM, "onnx: out of memory (%zu bytes)", cap);
      return;
    }
    b->p = p, b->cap = cap;
  }
  memcpy(b->p + b->n, d, n);
  b->n += n;
}

static size_t varint_len(uint64_t v) {
  size_t n = 1;
  while (v >>= 7) n++;
  return n;
}

static void pb_varint(pb *b, uint64_t v) {
  uint8_t t[10];
  size_t n = 0;
  do {
    t[n] = (uint8_t)(v & 0x7f);
    v >>= 7;
    if (v) t[n] |= 0x80;
    n++;
  } while (v);
  pb_put(b, t, n);
}

static void pb_key(pb *b, int field, int wt) { pb_varint(b, (uint64_t)field << 3 | (uint64_t)wt); }

static void pb_int(pb *b, int field, int64_t v) {
  pb_key(b, field, WT_VARINT);
  pb_varint(b, (uint64_t)v); /* int64: negatives as 10-byte two's complement */
}

static void pb_bytes(pb *b, int field, const void *d, size_t n) {
  pb_key(b, field, WT_LEN);
  pb_varint(b, n);
  pb_put(b, d, n);
}

static void pb_str(pb *b, int field, const char *s) { pb_bytes(b, field, s, strlen(s)); }

/* Embeds `sub` as field `field` and empties it for the next message. */
static void pb_msg(pb *b, int field, pb *sub) {
  if (sub->rc && !b->rc) b->rc = sub->rc;
  pb_bytes(b, field, sub->p, sub->n);
  sub->n = 0;
}

#define NAME_CAP 96

typedef struct graph {
  pb g;         /* GraphProto body: nodes and initializers in the order made */
  pb node, tmp; /* scratch for a NodeProto and its attributes / a TensorProto header */
  const bf_st_writer *half;
  const char *source;
} graph;

static int graph_rc(graph *G) {
  if (G->node.rc) return G->node.rc;
  if (G->tmp.rc) return G->tmp.rc;
  return G->g.rc;
}

/* The folded tensor `name` as an initializer, after checking it has the shape
 * the graph is built for. raw_data is written straight into the graph: the
 * weights are copied once. */
static int initializer(graph *G, const char *name, int ndim, const int64_t *shape) {
  const bf_st_entry *e = NULL;
  for (int i = 0; i < G->half->n && !e; i++)
    if (!strcmp(G->half->entries[i].name, name)) e = &G->half->entries[i];
  if (!e) return bf_error(BF_EINVAL, "%s: no tensor '%s' for the ONNX graph", G->source, name);
  int ok = e->dtype == BF_DT_F32 && e->ndim == ndim;
  for (int i = 0; ok && i < ndim; i++) ok = e->shape[i] == shape[i];
  if (!ok) {
    char want[64] = "", got[64] = "";
    for (int i = 0; i < ndim; i++) snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? "," : "", (long long)shape[i]);
    for (int i = 0; i < e->ndim; i++)
      snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? "," : "", (long long)e->shape[i]);
    return bf_error(BF_EINVAL, "%s: tensor '%s' is %s [%s], the ONNX graph needs F32 [%s]", G->source, name,
                    bf_dtype_name(e->dtype), got, want);
  }
  pb *h = &G->tmp;
  h->n = 0;
  for (int i = 0; i < ndim; i++) pb_int(h, TENSOR_DIMS, shape[i]);
  pb_int(h, TENSOR_DATA_TYPE, DATA_TYPE_FLOAT);
  pb_str(h, TENSOR_NAME, name);
  size_t raw_field = varint_len((uint64_t)TENSOR_RAW_DATA << 3 | WT_LEN) + varint_len(e->bytes) + e->bytes;
  pb_key(&G->g, GRAPH_INITIALIZER, WT_LEN);
  pb_varint(&G->g, h->n + raw_field);
  pb_put(&G->g, h->p, h->n);
  pb_bytes(&G->g, TENSOR_RAW_DATA, e->data, e->bytes);
  h->n = 0;
  return graph_rc(G);
}

static void attr_ints(graph *G, const char *name, const int64_t *v, int n) {
  pb_str(&G->tmp, ATTR_NAME, name);
  pb_int(&G->tmp, ATTR_TYPE, ATTR_TYPE_INTS);
  for (int i = 0; i < n; i++) pb_int(&G->tmp, ATTR_INTS, v[i]);
  pb_msg(&G->node, NODE_ATTRIBUTE, &G->tmp);
}

static void attr_int(graph *G, const char *name, int64_t v) {
  pb_str(&G->tmp, ATTR_NAME, name);
  pb_int(&G->tmp, ATTR_TYPE, ATTR_TYPE_INT);
  pb_int(&G->tmp, ATTR_I, v);
  pb_msg(&G->node, NODE_ATTRIBUTE, &G->tmp);
}

/* Starts a node; attributes follow, node_end embeds it. */
static void node_begin(graph *G, const char *op, const char *const *in, int n_in, const char *out) {
  G->node.n = 0;
  for (int i = 0; i < n_in; i++) pb_str(&G->node, NODE_INPUT, in[i]);
  pb_str(&G->node, NODE_OUTPUT, out);
  pb_str(&G->node, NODE_NAME, out);
  pb_str(&G->node, NODE_OP_TYPE, op);
}

static void node_end(graph *G) { pb_msg(&G->g, GRAPH_NODE, &G->node); }

static void unary(graph *G, const char *op, const char *x, const char *out) {
  node_begin(G, op, &x, 1, out);
  node_end(G);
}

/* Folded conv `name` (weight [cout,cin,k,k] OIHW, bias [cout], as in the
 * safetensors halves) on value x, then ReLU if relu. The result's value name
 * goes to y: out_name if given, else one derived from `name`. */
static int conv(graph *G, const char *name, const char *x, int cin, int cout, int k, int stride, int pad, int relu,
                const char *out_name, char *y) {
  char w[NAME_CAP], b[NAME_CAP], c[NAME_CAP];
  snprintf(w, sizeof w, "%s.weight", name);
  snprintf(b, sizeof b, "%s.bias", name);
  int64_t ws[4] = {cout, cin, k, k}, bs[1] = {cout};
  BF_TRY(initializer(G, w, 4, ws));
  BF_TRY(initializer(G, b, 1, bs));
  if (relu) snprintf(c, sizeof c, "%s", name);
  else snprintf(c, sizeof c, "%s", out_name ? out_name : name);
  const char *in[3] = {x, w, b};
  node_begin(G, "Conv", in, 3, c);
  int64_t ks[2] = {k, k}, st[2] = {stride, stride}, pads[4] = {pad, pad, pad, pad};
  attr_ints(G, "kernel_shape", ks, 2);
  attr_ints(G, "strides", st, 2);
  attr_ints(G, "pads", pads, 4);
  node_end(G);
  if (relu) {
    char r[NAME_CAP];
    if (out_name) snprintf(r, sizeof r, "%s", out_name);
    else snprintf(r, sizeof r, "%s.relu", name);
    unary(G, "Relu", c, r);
    snprintf(y, NAME_CAP, "%s", r);
  } else {
    snprintf(y, NAME_CAP, "%s", c);
  }
  return graph_rc(G);
}

/* RBk on value cur (updated to the block's output): conv1 1x1 + ReLU,
 * conv2 3x3 (the block's stride) + ReLU, conv3 1x1, + shortcut (the
 * downsample conv in a stage's first block), ReLU. */
static int block(graph *G, int rb, char *cur) {
  bf_rb_info B;
  BF_TRY(bf_rb_layout(rb, &B));
  char n[NAME_CAP], a[NAME_CAP], c[NAME_CAP], sc[NAME_CAP], sum[NAME_CAP];
  snprintf(n, sizeof n, "%s.conv1", B.prefix);
  BF_TRY(conv(G, n, cur, B.in_c, B.mid, 1, 1, 0, 1, NULL, a));
  snprintf(n, sizeof n, "%s.conv2", B.prefix);
  BF_TRY(conv(G, n, a, B.mid, B.mid, 3, B.stride, 1, 1, NULL, c));
  snprintf(n, sizeof n, "%s.conv3", B.prefix);
  BF_TRY(conv(G, n, c, B.mid, B.out_c, 1, 1, 0, 0, NULL, a));
  snprintf(sc, sizeof sc, "%s", cur);
  if (B.has_downsample) {
    snprintf(n, sizeof n, "%s.downsample.0", B.prefix);
    BF_TRY(conv(G, n, cur, B.in_c, B.out_c, 1, B.stride, 0, 0, NULL, sc));
  }
  snprintf(sum, sizeof sum, "%s.add", B.prefix);
  const char *in[2] = {a, sc};
  node_begin(G, "Add", in, 2, sum);
  node_end(G);
  snprintf(cur, NAME_CAP, "%s", B.prefix);
  unary(G, "Relu", sum, cur);
  return graph_rc(G);
}

/* ValueInfoProto of a float tensor; dims < 0 are symbolic (sym[i]). */
static int value_info(pb *out, int field, const char *name, int ndim, const int64_t *dims, const char *const *sym) {
  pb d = {0}, s = {0}, t = {0}, v = {0};
  for (int i = 0; i < ndim; i++) {
    if (dims[i] >= 0) pb_int(&d, DIM_VALUE, dims[i]);
    else pb_str(&d, DIM_PARAM, sym[i]);
    pb_msg(&s, SHAPE_DIM, &d);
  }
  pb_int(&t, TTYPE_ELEM, DATA_TYPE_FLOAT);
  pb_msg(&t, TTYPE_SHAPE, &s);
  pb_msg(&d, TYPE_TENSOR, &t); /* d: the TypeProto */
  pb_str(&v, VALUE_NAME, name);
  pb_msg(&v, VALUE_TYPE, &d);
  pb_msg(out, field, &v);
  free(d.p), free(s.p), free(t.p), free(v.p);
  return out->rc;
}

static void meta(pb *m, const char *key, const char *value) {
  pb e = {0};
  pb_str(&e, ENTRY_KEY, key);
  pb_str(&e, ENTRY_VALUE, value);
  pb_msg(m, MODEL_METADATA, &e);
  free(e.p);
}

static int build(graph *G, const bf_model_config *cfg, int server) {
  static const char *sym_img[4] = {"N", "3", "H", "W"}, *sym_feat[4] = {"N", "D_r", "feature_h", "feature_w"},
                    *sym_logits[2] = {"N", "classes"};
  int k = cfg->split_after, rb_c = bf_rb_channels(k);
  int64_t img[4] = {-1, 3, -1, -1}, feat[4] = {-1, cfg->d_r, -1, -1}, logits[2] = {-1, cfg->num_classes};
  char cur[NAME_CAP], x[NAME_CAP];
  pb_str(&G->g, GRAPH_NAME, server ? "butterfly_server_half" : "butterfly_device_half");
  if (!server) {
    BF_TRY(value_info(&G->g, GRAPH_INPUT, "image", 4, img, sym_img));
    BF_TRY(conv(G, "conv1", "image", 3, BF_STEM_C, BF_STEM_K, BF_STEM_STRIDE, BF_STEM_PAD, 1, NULL, x));
    snprintf(cur, sizeof cur, "maxpool");
    node_begin(G, "MaxPool", (const char *const[]){x}, 1, cur);
    int64_t ks[2] = {BF_POOL_K, BF_POOL_K}, st[2] = {BF_POOL_STRIDE, BF_POOL_STRIDE},
            pads[4] = {BF_POOL_PAD, BF_POOL_PAD, BF_POOL_PAD, BF_POOL_PAD};
    attr_ints(G, "kernel_shape", ks, 2);
    attr_ints(G, "strides", st, 2);
    attr_ints(G, "pads", pads, 4);
    node_end(G);
    for (int rb = 1; rb <= k; rb++) BF_TRY(block(G, rb, cur));
    BF_TRY(conv(G, "butterfly.reduce.conv", cur, rb_c, cfg->d_r, 1, 1, 0, 1, "features", x));
    return value_info(&G->g, GRAPH_OUTPUT, "features", 4, feat, sym_feat);
  }
  BF_TRY(value_info(&G->g, GRAPH_INPUT, "features", 4, feat, sym_feat));
  BF_TRY(conv(G, "butterfly.restore.conv", "features", cfg->d_r, rb_c, 1, 1, 0, 1, NULL, cur));
  for (int rb = k + 1; rb <= BF_NUM_RB; rb++) BF_TRY(block(G, rb, cur));
  unary(G, "GlobalAveragePool", cur, "avgpool");
  node_begin(G, "Flatten", (const char *const[]){"avgpool"}, 1, "flatten");
  attr_int(G, "axis", 1);
  node_end(G);
  int64_t ws[2] = {cfg->num_classes, BF_FEAT_C}, bs[1] = {cfg->num_classes};
  BF_TRY(initializer(G, "fc.weight", 2, ws));
  BF_TRY(initializer(G, "fc.bias", 1, bs));
  node_begin(G, "Gemm", (const char *const[]){"flatten", "fc.weight", "fc.bias"}, 3, "logits");
  attr_int(G, "transB", 1);
  node_end(G);
  return value_info(&G->g, GRAPH_OUTPUT, "logits", 2, logits, sym_logits);
}

int bf_onnx_write_half(const bf_st_writer *half, const bf_model_config *cfg, int server, const char *source,
                       const char *path) {
  if (cfg->split_after < 1 || cfg->split_after > BF_NUM_RB)
    return bf_error(BF_EINVAL, "%s: split_after = %d: no butterfly unit to split at", source, cfg->split_after);
  graph G = {.half = half, .source = source};
  pb m = {0}, o = {0};
  int rc = build(&G, cfg, server);
  if (!rc) rc = graph_rc(&G);
  if (!rc) {
    char b[32];
    pb_int(&m, MODEL_IR_VERSION, ONNX_IR_VERSION);
    pb_str(&m, MODEL_PRODUCER_NAME, "butterfly bf-export");
    pb_str(&m, MODEL_PRODUCER_VERSION, "1");
    pb_str(&m, MODEL_DOC,
           server ? "butterfly server half: BN-folded restoration, RBk+1..RB16, average pool, fc; float features "
                    "[N,D_r,h,w] in (dequantised), logits out"
                  : "butterfly device half: BN-folded stem, RB1..RBk, reduction; normalised image [N,3,H,W] in, "
                    "float features [N,D_r,h,w] out (quantise them for the wire)");
    pb_int(&o, OPSET_VERSION, ONNX_OPSET);
    pb_msg(&m, MODEL_OPSET_IMPORT, &o);
    meta(&m, "part", server ? "server" : "device");
    snprintf(b, sizeof b, "%d", cfg->split_after);
    meta(&m, "split_after", b);
    snprintf(b, sizeof b, "%d", cfg->d_r);
    meta(&m, "d_r", b);
    snprintf(b, sizeof b, "%d", cfg->num_classes);
    meta(&m, "num_classes", b);
    meta(&m, "bn_folded", "1");
    pb_key(&m, MODEL_GRAPH, WT_LEN);
    pb_varint(&m, G.g.n);
    rc = m.rc;
  }
  if (!rc) {
    bf_atomic_file af;
    rc = bf_atomic_open(&af, path);
    if (!rc) rc = bf_atomic_write(&af, m.p, m.n);
    if (!rc) rc = bf_atomic_write(&af, G.g.p, G.g.n);
    if (!rc) rc = bf_atomic_commit(&af);
    else bf_atomic_abort(&af);
  }
  free(G.g.p), free(G.node.p), free(G.tmp.p), free(m.p), free(o.p);
  return rc;
}
