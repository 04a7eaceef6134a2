/* What sfu/_lane.c (lanes, counters) and sfu/_reader.c (the reader's turn) share. */
#ifndef INVIGIL_LANE_H
#define INVIGIL_LANE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* libsrtp 2's srtp_protect and srtp_unprotect, as pylibsrtp links them. */
typedef int (*srtp_call)(void *session, void *packet, int *length);

#define HEADER_ROOM 64

typedef struct {
    PyObject_HEAD
    PyObject *rx;          /* the FastSrtp objects keep their libsrtp sessions alive */
    PyObject *tx;
    PyObject *stats;       /* the publication's TrackStats */
    PyObject *leg;         /* the Leg */
    PyObject *history;     /* the Leg's retransmission history, a list of HISTORY_SIZE */
    PyObject *sink;        /* where the caller sends what `forward` returns */
    PyObject *destination; /* the sink's Destination, or NULL: where the reader sends directly */
    void *rx_session;
    void *tx_session;
    srtp_call unprotect;
    srtp_call protect;
    int payload_type_in;
    int payload_type_out;
    int audio_level_id;    /* the ssrc-audio-level extension id, or -1 */
    int first_byte;
    uint32_t ssrc;
    uint32_t sequence_offset;
    uint32_t timestamp_offset;
    Py_ssize_t abs_send_time_at; /* where the abs-send-time element starts, or -1 */
    Py_ssize_t header_size;
    unsigned char header[HEADER_ROOM];
} Lane;

/* An object that may hold a lane: Publication derives from it, so the reader finds the
 * lane of a track without an attribute lookup. */
typedef struct {
    PyObject_HEAD
    PyObject *lane; /* a Lane, or NULL */
} LaneSlot;

extern PyTypeObject LaneType;
extern PyTypeObject LaneSlotType;

/* Decrypt the SRTP packet in buffer[:size] in place and forward it: see Lane.forward. */
PyObject *lane_forward_buffer(Lane *lane, unsigned char *buffer, Py_ssize_t capacity, Py_ssize_t size);

/* Adds Reader, MediaSocket, Inbox and Destination to the module (sfu/_reader.c). */
int reader_add_types(PyObject *module);

#endif
