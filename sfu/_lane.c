/* The steady state of one route, in C: decrypt, count, rewrite, encrypt.
 *
 * A lane forwards the packets of one publication to its one leg while nothing
 * unusual happens: the packet is valid and the next in sequence. It reads the
 * audio level of every fifth audio packet, as Publication.receive does. Everything
 * else (a gap, a reordered packet, a malformed one, a leg that waits for a
 * keyframe) goes back to the Python path in
 * sfu/publication.py and sfu/forward.py, which stays the reference. The counters
 * are the TrackStats' and the Leg's own, kept here as C fields (TrackCounters and
 * LegCounters, their base classes): one copy, which either path can update.
 *
 * Measured at 40 students / 5 surveillants: the per-packet Python this replaces
 * cost about a sixth of the SFU's CPU.
 *
 * Untrusted input: every byte read from a packet is bounds-checked against the
 * length libsrtp returned; tests/test_lane.py checks this file against the
 * Python path on random packets.
 */
#include "_lane.h"
#include "structmember.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define HISTORY_SIZE 256 /* sfu.forward.HISTORY_SIZE */
#define OUT_SIZE 1500    /* sfu.srtp.BUFFER_SIZE */
#define TRAILER_ROOM 30  /* sfu.srtp.TRAILER_ROOM */

/* Built per packet and handed to libsrtp; the GIL is held throughout, so one serves all. */
static unsigned char out[OUT_SIZE];

/* The per-packet counters of a track and of a leg, as C fields that Python reads and
 * writes as attributes (sfu.track_stats.TrackStats and sfu.forward.Leg derive from
 * these): the lane updates them without a lookup or an allocation. */
typedef struct {
    PyObject_HEAD
    long long packets;
    long long bytes;
    long long frames;
    long long lost;
    double last_packet;
    long long expected_sequence; /* -1: nothing received yet (None in Python) */
    PyObject *audio_level;
} TrackCounters;

typedef struct {
    PyObject_HEAD
    long long packets_sent;
    long long last_sequence;
    long long last_timestamp;
} LegCounters;

static PyObject *
TrackCounters_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    TrackCounters *self = (TrackCounters *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->expected_sequence = -1;
    return (PyObject *)self;
}

static void
TrackCounters_dealloc(TrackCounters *self)
{
    Py_CLEAR(self->audio_level);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
TrackCounters_get_expected(TrackCounters *self, void *closure)
{
    if (self->expected_sequence < 0)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(self->expected_sequence);
}

static int
TrackCounters_set_expected(TrackCounters *self, PyObject *value, void *closure)
{
    if (value == NULL || value == Py_None) {
        self->expected_sequence = -1;
        return 0;
    }
    long long sequence = PyLong_AsLongLong(value);
    if (sequence == -1 && PyErr_Occurred())
        return -1;
    if (sequence < 0 || sequence > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "expected_sequence is a 16-bit sequence number or None");
        return -1;
    }
    self->expected_sequence = sequence;
    return 0;
}

static PyMemberDef TrackCounters_members[] = {
    {"packets", T_LONGLONG, offsetof(TrackCounters, packets), 0, "RTP packets counted."},
    {"bytes", T_LONGLONG, offsetof(TrackCounters, bytes), 0, "Payload bytes counted."},
    {"frames", T_LONGLONG, offsetof(TrackCounters, frames), 0, "Packets with the marker bit (video frames)."},
    {"lost", T_LONGLONG, offsetof(TrackCounters, lost), 0, "Sequence numbers skipped."},
    {"last_packet", T_DOUBLE, offsetof(TrackCounters, last_packet), 0, "time.monotonic() of the last packet."},
    {"audio_level", T_OBJECT, offsetof(TrackCounters, audio_level), 0, "RFC 6464 level of the last reading, or None."},
    {NULL},
};

static PyGetSetDef TrackCounters_getset[] = {
    {"expected_sequence", (getter)TrackCounters_get_expected, (setter)TrackCounters_set_expected,
     "The next sequence number in order, or None before the first packet.", NULL},
    {NULL},
};

static PyTypeObject TrackCountersType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sfu._lane.TrackCounters",
    .tp_doc = PyDoc_STR("A track's per-packet counters, shared by the lane and the Python path."),
    .tp_basicsize = sizeof(TrackCounters),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = TrackCounters_new,
    .tp_dealloc = (destructor)TrackCounters_dealloc,
    .tp_members = TrackCounters_members,
    .tp_getset = TrackCounters_getset,
};

static PyMemberDef LegCounters_members[] = {
    {"packets_sent", T_LONGLONG, offsetof(LegCounters, packets_sent), 0, "Packets sent on the leg."},
    {"_last_sequence", T_LONGLONG, offsetof(LegCounters, last_sequence), 0, "The leg's last sequence number."},
    {"_last_timestamp", T_LONGLONG, offsetof(LegCounters, last_timestamp), 0, "The leg's last RTP timestamp."},
    {NULL},
};

static PyTypeObject LegCountersType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sfu._lane.LegCounters",
    .tp_doc = PyDoc_STR("A leg's per-packet counters, shared by the lane and the Python path."),
    .tp_basicsize = sizeof(LegCounters),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_members = LegCounters_members,
};


static int
Lane_traverse(Lane *self, visitproc visit, void *arg)
{
    Py_VISIT(self->rx);
    Py_VISIT(self->tx);
    Py_VISIT(self->stats);
    Py_VISIT(self->leg);
    Py_VISIT(self->history);
    Py_VISIT(self->sink);
    Py_VISIT(self->destination);
    return 0;
}

static int
Lane_clear(Lane *self)
{
    Py_CLEAR(self->rx);
    Py_CLEAR(self->tx);
    Py_CLEAR(self->stats);
    Py_CLEAR(self->leg);
    Py_CLEAR(self->history);
    Py_CLEAR(self->sink);
    Py_CLEAR(self->destination);
    return 0;
}

static void
Lane_dealloc(Lane *self)
{
    PyObject_GC_UnTrack(self);
    Lane_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static void *
as_pointer(PyObject *number)
{
    return PyLong_AsVoidPtr(number);
}

static int
Lane_init(Lane *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {
        "rx", "rx_session", "tx", "tx_session", "unprotect", "protect", "stats", "leg", "history", "sink",
        "payload_type_in", "payload_type_out", "audio_level_id", "first_byte", "ssrc",
        "sequence_offset", "timestamp_offset", "header", "abs_send_time_at", "destination", NULL};
    PyObject *rx, *rx_session, *tx, *tx_session, *unprotect, *protect, *stats, *leg, *history, *sink;
    PyObject *destination = Py_None;
    int payload_type_in, payload_type_out, audio_level_id, first_byte;
    unsigned long ssrc, sequence_offset, timestamp_offset;
    Py_buffer header;
    Py_ssize_t abs_send_time_at;

    if (!PyArg_ParseTupleAndKeywords(
            args, kwargs, "OOOOOOOOO!Oiiiikkky*n|O", names, &rx, &rx_session, &tx, &tx_session, &unprotect,
            &protect, &stats, &leg, &PyList_Type, &history, &sink, &payload_type_in, &payload_type_out,
            &audio_level_id, &first_byte, &ssrc, &sequence_offset, &timestamp_offset, &header,
            &abs_send_time_at, &destination))
        return -1;
    if (!PyObject_TypeCheck(stats, &TrackCountersType) || !PyObject_TypeCheck(leg, &LegCountersType)) {
        PyBuffer_Release(&header);
        PyErr_SetString(PyExc_TypeError, "lane: stats and leg must derive from TrackCounters and LegCounters");
        return -1;
    }
    if (header.len < 12 || header.len > HEADER_ROOM || PyList_GET_SIZE(history) != HISTORY_SIZE ||
        abs_send_time_at < -1 || abs_send_time_at + 4 > header.len || payload_type_in < 0 ||
        payload_type_in > 127 || payload_type_out < 0 || payload_type_out > 127 || audio_level_id < -1 ||
        audio_level_id > 14) {
        PyBuffer_Release(&header);
        PyErr_SetString(PyExc_ValueError, "lane: inconsistent route");
        return -1;
    }
    self->rx_session = as_pointer(rx_session);
    self->tx_session = as_pointer(tx_session);
    self->unprotect = (srtp_call)as_pointer(unprotect);
    self->protect = (srtp_call)as_pointer(protect);
    if (PyErr_Occurred()) {
        PyBuffer_Release(&header);
        return -1;
    }
    if (!self->rx_session || !self->tx_session || !self->unprotect || !self->protect) {
        PyBuffer_Release(&header);
        PyErr_SetString(PyExc_ValueError, "lane: null session or function");
        return -1;
    }
    memcpy(self->header, header.buf, header.len);
    self->header_size = header.len;
    PyBuffer_Release(&header);
    Py_XSETREF(self->rx, Py_NewRef(rx));
    Py_XSETREF(self->tx, Py_NewRef(tx));
    Py_XSETREF(self->stats, Py_NewRef(stats));
    Py_XSETREF(self->leg, Py_NewRef(leg));
    Py_XSETREF(self->history, Py_NewRef(history));
    Py_XSETREF(self->sink, Py_NewRef(sink));
    Py_XSETREF(self->destination, destination == Py_None ? NULL : Py_NewRef(destination));
    self->payload_type_in = payload_type_in;
    self->payload_type_out = payload_type_out;
    self->audio_level_id = audio_level_id;
    self->first_byte = first_byte & 0xFF;
    self->ssrc = (uint32_t)ssrc;
    self->sequence_offset = (uint32_t)sequence_offset & 0xFFFF;
    self->timestamp_offset = (uint32_t)timestamp_offset;
    self->abs_send_time_at = abs_send_time_at;
    return 0;
}

static double
clock_seconds(clockid_t clock)
{
    struct timespec now;
    clock_gettime(clock, &now);
    return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

/* The decrypted packet goes the Python way: its new length, for the caller. */
static PyObject *
to_python(int length)
{
    return PyLong_FromLong(length);
}

/* The RFC 6464 level (0 loudest .. 127 silent) in the one-byte header extension element
 * `id` (RFC 8285), or None: sfu.rtp_header.audio_level(extension_value(packet, id)). */
static PyObject *
audio_level(const unsigned char *p, Py_ssize_t length, int id)
{
    if (!(p[0] & 0x10))
        Py_RETURN_NONE;
    Py_ssize_t offset = 12 + 4 * (p[0] & 0x0F);
    if (length < offset + 4 || ((p[offset] << 8) | p[offset + 1]) != 0xBEDE)
        Py_RETURN_NONE;
    Py_ssize_t end = offset + 4 + 4 * ((p[offset + 2] << 8) | p[offset + 3]);
    if (end > length)
        end = length;
    Py_ssize_t position = offset + 4;
    while (position < end) {
        int byte = p[position];
        if (byte == 0) {
            position += 1;
            continue;
        }
        int element = byte >> 4;
        if (element == 15)
            Py_RETURN_NONE;
        if (element == id) {
            if (position + 1 < length)
                return PyLong_FromLong(p[position + 1] & 0x7F);
            Py_RETURN_NONE;
        }
        position += 1 + (byte & 0x0F) + 1;
    }
    Py_RETURN_NONE;
}

/* A decrypted packet in p[0:length]: forward it if it is the steady state, else hand it back. */
static PyObject *
forward_decrypted(Lane *self, const unsigned char *p, int length)
{
    if (length < 12)
        return to_python(length);
    int first = p[0], second = p[1];
    if ((first & 0xC0) != 0x80 || (second & 0x7F) != self->payload_type_in)
        return to_python(length);
    Py_ssize_t start = 12 + 4 * (first & 0x0F);
    if (first & 0x10) {
        if (start + 4 > length)
            return to_python(length);
        start += 4 + 4 * ((p[start + 2] << 8) | p[start + 3]);
    }
    Py_ssize_t end = (first & 0x20) ? length - p[length - 1] : length;
    if (start >= end || self->header_size + (end - start) + TRAILER_ROOM > OUT_SIZE)
        return to_python(length);
    uint32_t sequence = ((uint32_t)p[2] << 8) | p[3];
    uint32_t timestamp = ((uint32_t)p[4] << 24) | ((uint32_t)p[5] << 16) | ((uint32_t)p[6] << 8) | p[7];

    TrackCounters *stats = (TrackCounters *)self->stats;
    if (stats->expected_sequence != (long long)sequence)
        return to_python(length); /* a gap or a late packet: counted and answered in Python */

    /* What Leg.send builds and protects, first: a packet the leg's SRTP session refuses (a
     * jump libsrtp takes for a replay) goes to the Python path with nothing counted yet, which
     * counts it as received and keeps None in the history. */
    LegCounters *leg = (LegCounters *)self->leg;
    uint32_t out_sequence = (sequence + self->sequence_offset) & 0xFFFF;
    uint32_t out_timestamp = timestamp + self->timestamp_offset;
    memcpy(out, self->header, self->header_size);
    out[0] = (unsigned char)self->first_byte;
    out[1] = (unsigned char)((second & 0x80) | self->payload_type_out);
    out[2] = out_sequence >> 8;
    out[3] = out_sequence & 0xFF;
    out[4] = out_timestamp >> 24;
    out[5] = (out_timestamp >> 16) & 0xFF;
    out[6] = (out_timestamp >> 8) & 0xFF;
    out[7] = out_timestamp & 0xFF;
    out[8] = self->ssrc >> 24;
    out[9] = (self->ssrc >> 16) & 0xFF;
    out[10] = (self->ssrc >> 8) & 0xFF;
    out[11] = self->ssrc & 0xFF;
    if (self->abs_send_time_at >= 0) {
        /* abs-send-time: 6.18 fixed-point seconds of time.time(), 24 bits. */
        uint32_t value = (uint32_t)((long long)(clock_seconds(CLOCK_REALTIME) * 262144.0) & 0xFFFFFF);
        out[self->abs_send_time_at + 1] = value >> 16;
        out[self->abs_send_time_at + 2] = (value >> 8) & 0xFF;
        out[self->abs_send_time_at + 3] = value & 0xFF;
    }
    memcpy(out + self->header_size, p + start, end - start);
    int out_length = (int)(self->header_size + (end - start));
    if (self->protect(self->tx_session, out, &out_length) != 0)
        return to_python(length);
    PyObject *packet = PyBytes_FromStringAndSize((const char *)out, out_length);
    if (packet == NULL)
        return NULL;

    /* What Publication.receive counts. */
    stats->packets += 1;
    stats->bytes += end - start;
    stats->last_packet = clock_seconds(CLOCK_MONOTONIC); /* time.monotonic() */
    if (second & 0x80)
        stats->frames += 1;
    stats->expected_sequence = (sequence + 1) & 0xFFFF;
    if (self->audio_level_id >= 0 && stats->packets % 5 == 0) {
        PyObject *level = audio_level(p, length, self->audio_level_id);
        if (level == NULL) {
            Py_DECREF(packet);
            return NULL;
        }
        Py_XSETREF(stats->audio_level, level);
    }
    leg->last_sequence = out_sequence;
    leg->last_timestamp = out_timestamp;
    leg->packets_sent += 1;
    /* The history keeps what was sent: NACKs resend it as is. */
    if (PyList_SetItem(self->history, out_sequence % HISTORY_SIZE, Py_NewRef(packet)) < 0) {
        Py_DECREF(packet);
        return NULL;
    }
    return packet;
}

PyDoc_STRVAR(Lane_forward_doc,
"forward(datagram, size)\n--\n\n"
"Decrypt the SRTP packet in datagram[:size] in place. Return the packet to send\n"
"(bytes, already protected for the leg and kept in its history), None if there is\n"
"nothing to send, or the decrypted length (int) if the Python path must take it.");

PyObject *
lane_forward_buffer(Lane *self, unsigned char *buffer, Py_ssize_t capacity, Py_ssize_t size)
{
    int length = (int)size;
    if (size < 12 || size > capacity || size > INT_MAX)
        Py_RETURN_NONE;
    if (self->unprotect(self->rx_session, buffer, &length) != 0 || length < 0 || length > size)
        Py_RETURN_NONE; /* not authentic, a replay, or malformed: dropped like FastSrtp does */
    return forward_decrypted(self, buffer, length);
}

static PyObject *
Lane_forward(Lane *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "forward(datagram, size)");
        return NULL;
    }
    Py_ssize_t size = PyLong_AsSsize_t(args[1]);
    if (size == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE) < 0)
        return NULL;
    PyObject *result = lane_forward_buffer(self, view.buf, view.len, size);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef Lane_methods[] = {
    {"forward", (PyCFunction)(void (*)(void))Lane_forward, METH_FASTCALL, Lane_forward_doc},
    {NULL},
};

static PyMemberDef Lane_members[] = {
    {"sink", T_OBJECT, offsetof(Lane, sink), READONLY, "Where the packets `forward` returns go."},
    {"leg", T_OBJECT, offsetof(Lane, leg), READONLY, "The leg this lane feeds."},
    {NULL},
};

PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sfu._lane.Lane",
    .tp_doc = PyDoc_STR("One publication's packets to its leg, in the steady state (see sfu/lane.py)."),
    .tp_basicsize = sizeof(Lane),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Lane_init,
    .tp_dealloc = (destructor)Lane_dealloc,
    .tp_traverse = (traverseproc)Lane_traverse,
    .tp_clear = (inquiry)Lane_clear,
    .tp_methods = Lane_methods,
    .tp_members = Lane_members,
};

static int
LaneSlot_traverse(LaneSlot *self, visitproc visit, void *arg)
{
    Py_VISIT(self->lane);
    return 0;
}

static int
LaneSlot_clear(LaneSlot *self)
{
    Py_CLEAR(self->lane);
    return 0;
}

static void
LaneSlot_dealloc(LaneSlot *self)
{
    PyObject_GC_UnTrack(self);
    LaneSlot_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef LaneSlot_members[] = {
    {"lane", T_OBJECT, offsetof(LaneSlot, lane), 0, "The native lane forwarding this track's steady state, or None."},
    {NULL},
};

PyTypeObject LaneSlotType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sfu._lane.LaneSlot",
    .tp_doc = PyDoc_STR("Holds a track's lane where the reader finds it without a lookup (Publication's base)."),
    .tp_basicsize = sizeof(LaneSlot),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)LaneSlot_dealloc,
    .tp_traverse = (traverseproc)LaneSlot_traverse,
    .tp_clear = (inquiry)LaneSlot_clear,
    .tp_members = LaneSlot_members,
};

static struct PyModuleDef lane_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "sfu._lane",
    .m_doc = "Native steady-state forwarding for one route; sfu/lane.py builds the lanes.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__lane(void)
{
    if (PyType_Ready(&TrackCountersType) < 0 || PyType_Ready(&LegCountersType) < 0)
        return NULL;
    if (PyType_Ready(&LaneType) < 0 || PyType_Ready(&LaneSlotType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&lane_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "Lane", (PyObject *)&LaneType) < 0 ||
        PyModule_AddObjectRef(module, "TrackCounters", (PyObject *)&TrackCountersType) < 0 ||
        PyModule_AddObjectRef(module, "LegCounters", (PyObject *)&LegCountersType) < 0 ||
        PyModule_AddObjectRef(module, "LaneSlot", (PyObject *)&LaneSlotType) < 0 || reader_add_types(module) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
