/* The reader's turn in C: epoll, recvfrom, the lanes, and the sends held to the turn's end.
 *
 * sfu/media_socket.py's MediaPoller decides when a turn runs; a turn reads every
 * ready socket in rounds, exactly as PythonReader there does (the reference, used
 * where this extension is not built). A datagram whose SSRC has an open lane on its
 * peer (the peer's Inbox) is forwarded without entering Python: the lane decrypts,
 * rewrites and encrypts it, and it is queued on the subscriber's socket (the
 * subscriber's Destination). Everything else (STUN, DTLS, RTCP, a track without a
 * lane, a packet a lane hands back) goes to the transport's Python code as before.
 * Whatever is sent during a turn, from here or from Python, leaves at its end, one
 * sendmmsg per socket.
 *
 * Only STUN (first byte 0-3, RFC 7983) is read from any sender: ICE must hear checks
 * from addresses it does not know yet. Every other datagram (DTLS, RTP, RTCP, junk) is
 * read only from a sender the socket was told is the remote end of a checked ICE pair
 * (MediaSocket.permit); the rest is dropped and counted (strangers_dropped) before any
 * lane or Python sees it: one stranger's forged DTLS alert would otherwise end a
 * participant's handshake. For a packet of the nominated pair this costs one compare:
 * load_tests.hot_path at 40/5, eight runs alternated with the version before, measured
 * 3.4-5.2 µs per forwarded packet (median 4.0) against 3.7-4.6 (median 4.0) on a busy machine.
 *
 * Measured at 40 students / 5 surveillants, 120 s runs alternated with the version
 * before it (together with lanes reading audio levels themselves): the SFU's CPU
 * for the same load fell by about 27% (SFU/bots CPU 0.229-0.233 against
 * 0.315-0.318): 23.5-25.5 µs per forwarded packet against 33.3-34.7.
 *
 * A shared port (`--media-port`, sfu/shared_port.py) is one socket in the epoll whose
 * `endpoints` (made by Reader.attach, one per peer's ICE component) send on its fd and
 * are not in the epoll themselves: the port hands each non-STUN datagram to the
 * endpoint that permitted its sender (the newest, if two did), and the endpoint takes
 * it on as if it had read it; STUN goes to the port's transport, which finds the
 * endpoint by ICE username or transaction. A sender no endpoint permitted is counted
 * on the port. The cost is one dict lookup per datagram on a shared port.
 *
 * Untrusted input: a datagram is read into a buffer of fixed size and one that fills
 * it is dropped; lanes bound-check the rest (sfu/_lane.c).
 */
#include "_lane.h"
#include "structmember.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_EVENTS 512
#define MAX_ROUTES 8    /* tracks one peer publishes: a student 3, a surveillant 2 */
#define MAX_QUEUED 4096 /* datagrams held back per socket in one turn; more are dropped */
#define SEND_BATCH 64   /* datagrams per sendmmsg */
#define MAX_SENDERS 16  /* checked pairs' remote addresses one socket reads from; the oldest goes first */

static PyObject *one;          /* the ICE component number of RTP, as aioice keys its pairs */
static PyObject *str_received; /* "_received" */
static PyObject *str_failed;   /* "_socket_error" */
static PyObject *str_resend;   /* "resend_rtp" */

typedef struct {
    PyObject *data; /* bytes */
    struct sockaddr_storage address;
    socklen_t address_size;
} Outgoing;

typedef struct Reader Reader;

/* A sender a socket reads non-STUN datagrams from: an address of the socket's family. */
typedef struct {
    in_port_t port;         /* network order */
    unsigned char host[16]; /* IPv4: the first 4 bytes */
} Sender;

typedef struct {
    PyObject_HEAD
    int fd;
    int family;
    int closed;
    int pending;         /* listed in its reader's sockets to flush */
    Reader *reader;
    PyObject *transport; /* its MediaDatagramTransport: _received(size, address), _socket_error(errno) */
    PyObject *inbox;     /* the peer's Inbox, or NULL */
    Outgoing *outgoing;
    Py_ssize_t queued;
    Py_ssize_t capacity;
    long long sends_dropped;
    int senders;                 /* how many of `sender` are in use, oldest first */
    Sender sender[MAX_SENDERS];  /* the remote ends of the checked ICE pairs on this socket */
    long long strangers_dropped; /* non-STUN datagrams from any other sender */
    PyObject *endpoints;         /* a shared port's endpoints, dict bytes(Sender) -> MediaSocket; else NULL */
    PyObject *port;              /* the shared port (MediaSocket) an endpoint is read on; else NULL */
} MediaSocket;

struct Reader {
    PyObject_HEAD
    int epoll_fd;  /* -1 once closed */
    int draining;  /* a turn is being read: sends wait for its end */
    int rounds;
    PyObject *sockets;  /* dict fd -> MediaSocket: keeps them alive while registered */
    PyObject *pending;  /* list of MediaSocket with datagrams held back */
    PyObject *buffer;   /* the DatagramBuffer whose memory datagrams are read into */
    Py_buffer view;
    PyObject *on_error; /* called with an exception nothing in Python caught */
};

typedef struct {
    PyObject_HEAD
    int count;
    uint32_t ssrcs[MAX_ROUTES];
    PyObject *tracks[MAX_ROUTES]; /* LaneSlot (Publication) */
    PyObject *python_path; /* called (track, datagram buffer, size) for a packet a lane decrypted but handed back */
    long long packets_received;
} Inbox;

typedef struct {
    PyObject_HEAD
    PyObject *nominated; /* aioice's dict of nominated pairs, by component */
    PyObject *pair;      /* the nominated pair the address was taken from */
    MediaSocket *socket;
    struct sockaddr_storage address;
    socklen_t address_size;
} Destination;

static PyTypeObject ReaderType, MediaSocketType, InboxType, DestinationType;

/* ---- errors ------------------------------------------------------------------ */

/* Hand the raised exception to the reader's on_error; the turn goes on. */
static void
report(Reader *reader)
{
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (value != NULL && traceback != NULL)
        PyException_SetTraceback(value, traceback);
    if (reader->on_error != NULL && value != NULL) {
        PyObject *result = PyObject_CallOneArg(reader->on_error, value);
        if (result == NULL)
            PyErr_Clear();
        Py_XDECREF(result);
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
}

static void
socket_error(MediaSocket *socket, int error)
{
    if (socket->transport == NULL)
        return;
    PyObject *number = PyLong_FromLong(error);
    PyObject *result = number ? PyObject_CallMethodOneArg(socket->transport, str_failed, number) : NULL;
    Py_XDECREF(number);
    if (result == NULL)
        report(socket->reader);
    Py_XDECREF(result);
}

/* ---- addresses ---------------------------------------------------------------------- */

/* (host, port) or (host, port, flowinfo, scope_id) with a numeric host, as a sockaddr. */
static int
parse_address(PyObject *address, int family, struct sockaddr_storage *out, socklen_t *size)
{
    const char *host;
    int port;
    unsigned int flowinfo = 0, scope_id = 0;
    if (!PyTuple_Check(address)) {
        PyErr_SetString(PyExc_ValueError, "an address is a tuple");
        return -1;
    }
    if (!PyArg_ParseTuple(address, "si|II", &host, &port, &flowinfo, &scope_id))
        return -1;
    if (port < 0 || port > 65535) {
        PyErr_SetString(PyExc_ValueError, "port out of range");
        return -1;
    }
    memset(out, 0, sizeof(*out));
    if (family == AF_INET) {
        struct sockaddr_in *ip = (struct sockaddr_in *)out;
        if (inet_pton(AF_INET, host, &ip->sin_addr) == 1) {
            ip->sin_family = AF_INET;
            ip->sin_port = htons((uint16_t)port);
            *size = sizeof(*ip);
            return 0;
        }
    } else if (family == AF_INET6) {
        struct sockaddr_in6 *ip = (struct sockaddr_in6 *)out;
        if (inet_pton(AF_INET6, host, &ip->sin6_addr) == 1) {
            ip->sin6_family = AF_INET6;
            ip->sin6_port = htons((uint16_t)port);
            ip->sin6_flowinfo = htonl(flowinfo);
            ip->sin6_scope_id = scope_id;
            *size = sizeof(*ip);
            return 0;
        }
    }
    PyErr_SetString(PyExc_ValueError, "not a numeric address of the socket's family");
    return -1;
}

/* The sender's address as the socket module names it. */
static PyObject *
make_address(const struct sockaddr_storage *address)
{
    char host[INET6_ADDRSTRLEN];
    if (address->ss_family == AF_INET) {
        const struct sockaddr_in *ip = (const struct sockaddr_in *)address;
        inet_ntop(AF_INET, &ip->sin_addr, host, sizeof(host));
        return Py_BuildValue("(si)", host, ntohs(ip->sin_port));
    }
    if (address->ss_family == AF_INET6) {
        const struct sockaddr_in6 *ip = (const struct sockaddr_in6 *)address;
        inet_ntop(AF_INET6, &ip->sin6_addr, host, sizeof(host));
        return Py_BuildValue("(siII)", host, ntohs(ip->sin6_port), ntohl(ip->sin6_flowinfo), ip->sin6_scope_id);
    }
    Py_RETURN_NONE;
}

/* The Sender of a parsed address of the socket's family; -1 (no exception) for another family. */
static int
sender_of(const struct sockaddr_storage *address, int family, Sender *out)
{
    memset(out, 0, sizeof(*out));
    if (family == AF_INET && address->ss_family == AF_INET) {
        const struct sockaddr_in *ip = (const struct sockaddr_in *)address;
        out->port = ip->sin_port;
        memcpy(out->host, &ip->sin_addr, 4);
        return 0;
    }
    if (family == AF_INET6 && address->ss_family == AF_INET6) {
        const struct sockaddr_in6 *ip = (const struct sockaddr_in6 *)address;
        out->port = ip->sin6_port;
        memcpy(out->host, &ip->sin6_addr, 16);
        return 0;
    }
    return -1;
}

/* Whether the socket reads non-STUN datagrams from `address`: for a packet of the nominated
 * pair (usually the only sender) one compare. */
static inline int
is_checked_sender(const MediaSocket *socket, const struct sockaddr_storage *address)
{
    if (address->ss_family == AF_INET) {
        const struct sockaddr_in *ip = (const struct sockaddr_in *)address;
        for (int i = 0; i < socket->senders; i++) {
            if (socket->sender[i].port == ip->sin_port && memcmp(socket->sender[i].host, &ip->sin_addr, 4) == 0)
                return 1;
        }
    } else if (address->ss_family == AF_INET6) {
        const struct sockaddr_in6 *ip = (const struct sockaddr_in6 *)address;
        for (int i = 0; i < socket->senders; i++) {
            if (socket->sender[i].port == ip->sin6_port && memcmp(socket->sender[i].host, &ip->sin6_addr, 16) == 0)
                return 1;
        }
    }
    return 0;
}

/* ---- sending ------------------------------------------------------------------------ */

static void
drop_queued(Outgoing *outgoing, Py_ssize_t count)
{
    for (Py_ssize_t i = 0; i < count; i++)
        Py_DECREF(outgoing[i].data);
}

/* Send the datagrams held back during the turn, in order. */
static void
flush(MediaSocket *socket)
{
    /* Take the queue first: reporting an error runs Python, which may send or close. */
    Outgoing *outgoing = socket->outgoing;
    Py_ssize_t count = socket->queued, capacity = socket->capacity, done = 0;
    socket->outgoing = NULL;
    socket->queued = socket->capacity = 0;
    struct mmsghdr messages[SEND_BATCH];
    struct iovec vectors[SEND_BATCH];
    while (done < count && !socket->closed) {
        int batch = count - done < SEND_BATCH ? (int)(count - done) : SEND_BATCH;
        memset(messages, 0, sizeof(messages[0]) * batch);
        for (int i = 0; i < batch; i++) {
            Outgoing *datagram = &outgoing[done + i];
            vectors[i].iov_base = PyBytes_AS_STRING(datagram->data);
            vectors[i].iov_len = PyBytes_GET_SIZE(datagram->data);
            messages[i].msg_hdr.msg_name = &datagram->address;
            messages[i].msg_hdr.msg_namelen = datagram->address_size;
            messages[i].msg_hdr.msg_iov = &vectors[i];
            messages[i].msg_hdr.msg_iovlen = 1;
        }
        int sent = sendmmsg(socket->fd, messages, batch, 0);
        if (sent > 0) {
            done += sent;
        } else if (sent == 0) {
            break;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            socket->sends_dropped += count - done; /* the kernel's buffer is full: real-time, so drop */
            break;
        } else {
            done += 1; /* this one cannot go; the protocol hears why, the rest still go */
            socket_error(socket, errno);
        }
    }
    drop_queued(outgoing, count);
    if (socket->outgoing == NULL) {
        socket->outgoing = outgoing; /* reused next turn */
        socket->capacity = capacity;
    } else {
        PyMem_Free(outgoing);
    }
}

static int
hold(MediaSocket *socket, PyObject *data, const struct sockaddr_storage *address, socklen_t size)
{
    if (socket->queued >= MAX_QUEUED) {
        socket->sends_dropped += 1;
        return 0;
    }
    if (socket->queued == socket->capacity) {
        Py_ssize_t capacity = socket->capacity ? socket->capacity * 2 : 16;
        Outgoing *grown = PyMem_Realloc(socket->outgoing, capacity * sizeof(Outgoing));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        socket->outgoing = grown;
        socket->capacity = capacity;
    }
    if (!socket->pending) {
        if (PyList_Append(socket->reader->pending, (PyObject *)socket) < 0)
            return -1;
        socket->pending = 1;
    }
    Outgoing *datagram = &socket->outgoing[socket->queued++];
    datagram->data = Py_NewRef(data);
    memcpy(&datagram->address, address, size);
    datagram->address_size = size;
    return 0;
}

/* Send `data` (bytes) now, or at the end of the turn if one is being read. */
static int
send_datagram(MediaSocket *socket, PyObject *data, const struct sockaddr_storage *address, socklen_t size)
{
    if (socket->closed)
        return 0;
    if (socket->reader->draining)
        return hold(socket, data, address, size);
    ssize_t sent;
    do {
        sent = sendto(socket->fd, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), 0,
                      (const struct sockaddr *)address, size);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            socket->sends_dropped += 1;
            return 0;
        }
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

/* ---- shared ports -------------------------------------------------------------------- */

static PyObject *
sender_key(const Sender *sender)
{
    return PyBytes_FromStringAndSize((const char *)sender, sizeof(*sender));
}

/* The endpoint of shared port `port` that permitted `address` (a new reference), or NULL. */
static MediaSocket *
endpoint_for(MediaSocket *port, const struct sockaddr_storage *address)
{
    Sender sender;
    if (sender_of(address, port->family, &sender) < 0)
        return NULL;
    PyObject *key = sender_key(&sender);
    if (key == NULL)
        return NULL;
    PyObject *endpoint = PyDict_GetItemWithError(port->endpoints, key);
    Py_DECREF(key);
    return (MediaSocket *)Py_XNewRef(endpoint);
}

/* The shared port stops reading `sender` for `endpoint` (if it still reads it for that one). */
static void
forget_sender(MediaSocket *endpoint, const Sender *sender)
{
    MediaSocket *port = (MediaSocket *)endpoint->port;
    if (port == NULL || port->endpoints == NULL)
        return;
    PyObject *key = sender_key(sender);
    if (key == NULL) {
        PyErr_Clear();
        return;
    }
    if (PyDict_GetItemWithError(port->endpoints, key) == (PyObject *)endpoint)
        PyDict_DelItem(port->endpoints, key);
    if (PyErr_Occurred())
        PyErr_Clear();
    Py_DECREF(key);
}

/* ---- MediaSocket --------------------------------------------------------------------- */

static void
socket_close(MediaSocket *socket)
{
    socket->closed = 1;
    drop_queued(socket->outgoing, socket->queued);
    socket->queued = 0;
    Py_CLEAR(socket->transport);
    Py_CLEAR(socket->inbox);
    if (socket->port != NULL) {
        for (int i = 0; i < socket->senders; i++)
            forget_sender(socket, &socket->sender[i]);
        Py_CLEAR(socket->port);
    }
    PyObject *endpoints = socket->endpoints;
    if (endpoints != NULL) {
        socket->endpoints = NULL; /* first: closing an endpoint looks here */
        Py_ssize_t position = 0;
        PyObject *key, *value;
        while (PyDict_Next(endpoints, &position, &key, &value))
            Py_CLEAR(((MediaSocket *)value)->port); /* the port reads nothing more for it */
        PyObject *values = PyDict_Values(endpoints);
        Py_DECREF(endpoints);
        if (values == NULL) {
            PyErr_Clear();
            return;
        }
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(values); i++)
            socket_close((MediaSocket *)PyList_GET_ITEM(values, i));
        Py_DECREF(values);
    }
}

static int
MediaSocket_traverse(MediaSocket *self, visitproc visit, void *arg)
{
    Py_VISIT(self->reader);
    Py_VISIT(self->transport);
    Py_VISIT(self->inbox);
    Py_VISIT(self->endpoints);
    Py_VISIT(self->port);
    return 0;
}

static int
MediaSocket_clear(MediaSocket *self)
{
    socket_close(self);
    Py_CLEAR(self->reader);
    return 0;
}

static void
MediaSocket_dealloc(MediaSocket *self)
{
    PyObject_GC_UnTrack(self);
    MediaSocket_clear(self);
    PyMem_Free(self->outgoing);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(MediaSocket_sendto_doc,
"sendto(data, address)\n--\n\n"
"Send one datagram now, or at the end of the turn if one is being read. Dropped (and\n"
"counted) if the socket's buffer is full. ValueError if the address is not numeric.");

static PyObject *
MediaSocket_sendto(MediaSocket *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "sendto(data, address)");
        return NULL;
    }
    if (self->closed)
        Py_RETURN_NONE;
    struct sockaddr_storage address;
    socklen_t size;
    if (parse_address(args[1], self->family, &address, &size) < 0)
        return NULL;
    PyObject *data = PyBytes_CheckExact(args[0]) ? Py_NewRef(args[0]) : PyBytes_FromObject(args[0]);
    if (data == NULL)
        return NULL;
    int failed = send_datagram(self, data, &address, size);
    Py_DECREF(data);
    if (failed)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
MediaSocket_get_inbox(MediaSocket *self, void *closure)
{
    return Py_NewRef(self->inbox ? self->inbox : Py_None);
}

static int
MediaSocket_set_inbox(MediaSocket *self, PyObject *value, void *closure)
{
    if (value != NULL && value != Py_None && !PyObject_TypeCheck(value, &InboxType)) {
        PyErr_SetString(PyExc_TypeError, "inbox must be an Inbox or None");
        return -1;
    }
    Py_XSETREF(self->inbox, (value == NULL || value == Py_None || self->closed) ? NULL : Py_NewRef(value));
    return 0;
}

PyDoc_STRVAR(MediaSocket_permit_doc,
"permit(address)\n--\n\n"
"Read non-STUN datagrams from `address` (host, port): the remote end of a checked ICE\n"
"pair on this socket. At most 16 are kept; one more lets go of the oldest. ValueError if\n"
"the host is not a numeric address of the socket's family, or the port out of range.");

static PyObject *
MediaSocket_permit(MediaSocket *self, PyObject *address)
{
    struct sockaddr_storage parsed;
    socklen_t size;
    Sender sender;
    if (parse_address(address, self->family, &parsed, &size) < 0)
        return NULL;
    if (sender_of(&parsed, self->family, &sender) < 0) {
        PyErr_SetString(PyExc_ValueError, "not a numeric address of the socket's family");
        return NULL;
    }
    for (int i = 0; i < self->senders; i++) {
        if (memcmp(&self->sender[i], &sender, sizeof(sender)) == 0)
            Py_RETURN_NONE;
    }
    if (self->senders == MAX_SENDERS) {
        forget_sender(self, &self->sender[0]);
        memmove(&self->sender[0], &self->sender[1], sizeof(Sender) * (MAX_SENDERS - 1));
        self->senders -= 1;
    }
    self->sender[self->senders++] = sender;
    MediaSocket *port = (MediaSocket *)self->port;
    if (port != NULL && port->endpoints != NULL && !self->closed) {
        PyObject *key = sender_key(&sender);
        int failed = key == NULL || PyDict_SetItem(port->endpoints, key, (PyObject *)self) < 0;
        Py_XDECREF(key);
        if (failed)
            return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
MediaSocket_get_permitted(MediaSocket *self, void *closure)
{
    PyObject *list = PyList_New(self->senders);
    if (list == NULL)
        return NULL;
    for (int i = 0; i < self->senders; i++) {
        char host[INET6_ADDRSTRLEN];
        inet_ntop(self->family, self->sender[i].host, host, sizeof(host));
        PyObject *address = Py_BuildValue("(si)", host, ntohs(self->sender[i].port));
        if (address == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, address);
    }
    return list;
}

static PyMethodDef MediaSocket_methods[] = {
    {"sendto", (PyCFunction)(void (*)(void))MediaSocket_sendto, METH_FASTCALL, MediaSocket_sendto_doc},
    {"permit", (PyCFunction)MediaSocket_permit, METH_O, MediaSocket_permit_doc},
    {NULL},
};

static PyMemberDef MediaSocket_members[] = {
    {"fileno", T_INT, offsetof(MediaSocket, fd), READONLY, "The socket's file descriptor."},
    {"closed", T_BOOL, offsetof(MediaSocket, closed), READONLY, "Whether the reader has let go of it."},
    {"sends_dropped", T_LONGLONG, offsetof(MediaSocket, sends_dropped), READONLY,
     "Datagrams dropped because the socket's buffer (or the turn's queue) was full."},
    {"strangers_dropped", T_LONGLONG, offsetof(MediaSocket, strangers_dropped), READONLY,
     "Non-STUN datagrams dropped because no checked ICE pair has their sender's address."},
    {NULL},
};

static PyGetSetDef MediaSocket_getset[] = {
    {"inbox", (getter)MediaSocket_get_inbox, (setter)MediaSocket_set_inbox,
     "The Inbox of the peer this socket serves: where the reader finds lanes.", NULL},
    {"permitted", (getter)MediaSocket_get_permitted, NULL,
     "The senders non-STUN datagrams are read from, as (host, port), oldest first.", NULL},
    {NULL},
};

static PyTypeObject MediaSocketType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sfu._lane.MediaSocket",
    .tp_doc = PyDoc_STR("One UDP socket of a Reader (made by Reader.register)."),
    .tp_basicsize = sizeof(MediaSocket),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)MediaSocket_dealloc,
    .tp_traverse = (traverseproc)MediaSocket_traverse,
    .tp_clear = (inquiry)MediaSocket_clear,
    .tp_methods = MediaSocket_methods,
    .tp_members = MediaSocket_members,
    .tp_getset = MediaSocket_getset,
};

/* ---- Inbox --------------------------------------------------------------------------- */

static int
Inbox_init(Inbox *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"python_path", NULL};
    PyObject *python_path;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O", names, &python_path))
        return -1;
    Py_XSETREF(self->python_path, Py_NewRef(python_path));
    return 0;
}

static int
Inbox_traverse(Inbox *self, visitproc visit, void *arg)
{
    for (int i = 0; i < self->count; i++)
        Py_VISIT(self->tracks[i]);
    Py_VISIT(self->python_path);
    return 0;
}

static int
Inbox_clear(Inbox *self)
{
    for (int i = 0; i < self->count; i++)
        Py_CLEAR(self->tracks[i]);
    self->count = 0;
    Py_CLEAR(self->python_path);
    return 0;
}

static void
Inbox_dealloc(Inbox *self)
{
    PyObject_GC_UnTrack(self);
    Inbox_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(Inbox_route_doc,
"route(ssrc, track)\n--\n\n"
"Packets with this SSRC belong to `track` (a LaneSlot): the reader forwards them\n"
"through its lane while it has one.");

static PyObject *
Inbox_route(Inbox *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyObject_TypeCheck(args[1], &LaneSlotType)) {
        PyErr_SetString(PyExc_TypeError, "route(ssrc, track), track a LaneSlot");
        return NULL;
    }
    unsigned long ssrc = PyLong_AsUnsignedLong(args[0]);
    if (ssrc == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    if (ssrc > 0xFFFFFFFFUL) {
        PyErr_SetString(PyExc_ValueError, "an SSRC has 32 bits");
        return NULL;
    }
    for (int i = 0; i < self->count; i++) {
        if (self->ssrcs[i] == ssrc) {
            Py_SETREF(self->tracks[i], Py_NewRef(args[1]));
            Py_RETURN_NONE;
        }
    }
    if (self->count == MAX_ROUTES) {
        PyErr_SetString(PyExc_ValueError, "a peer publishes at most 8 tracks");
        return NULL;
    }
    self->ssrcs[self->count] = (uint32_t)ssrc;
    self->tracks[self->count] = Py_NewRef(args[1]);
    self->count += 1;
    Py_RETURN_NONE;
}

static PyObject *
Inbox_forget(Inbox *self, PyObject *unused)
{
    Inbox_clear(self);
    Py_RETURN_NONE;
}

static PyMethodDef Inbox_methods[] = {
    {"route", (PyCFunction)(void (*)(void))Inbox_route, METH_FASTCALL, Inbox_route_doc},
    {"forget", (PyCFunction)Inbox_forget, METH_NOARGS, "Let go of every track and of the Python path (the peer closed)."},
    {NULL},
};

static PyMemberDef Inbox_members[] = {
    {"packets_received", T_LONGLONG, offsetof(Inbox, packets_received), 0,
     "Authentic RTP packets received from the peer, on either path."},
    {NULL},
};

static PyTypeObject InboxType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sfu._lane.Inbox",
    .tp_doc = PyDoc_STR("A peer's tracks by SSRC, where the reader looks for lanes."),
    .tp_basicsize = sizeof(Inbox),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Inbox_init,
    .tp_dealloc = (destructor)Inbox_dealloc,
    .tp_traverse = (traverseproc)Inbox_traverse,
    .tp_clear = (inquiry)Inbox_clear,
    .tp_methods = Inbox_methods,
    .tp_members = Inbox_members,
};

/* ---- Destination --------------------------------------------------------------------- */

static int
Destination_traverse(Destination *self, visitproc visit, void *arg)
{
    Py_VISIT(self->nominated);
    Py_VISIT(self->pair);
    Py_VISIT(self->socket);
    return 0;
}

static int
Destination_clear(Destination *self)
{
    Py_CLEAR(self->nominated);
    Py_CLEAR(self->pair);
    Py_CLEAR(self->socket);
    return 0;
}

static void
Destination_dealloc(Destination *self)
{
    PyObject_GC_UnTrack(self);
    Destination_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(Destination_point_doc,
"point(nominated, pair, socket, address)\n--\n\n"
"Lanes send straight to `address` on `socket` while `nominated[1]` is `pair`;\n"
"otherwise they ask the sink (resend_rtp), which points here again.");

static PyObject *
Destination_point(Destination *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyDict_Check(args[0]) || !PyObject_TypeCheck(args[2], &MediaSocketType)) {
        PyErr_SetString(PyExc_TypeError, "point(nominated: dict, pair, socket: MediaSocket, address)");
        return NULL;
    }
    MediaSocket *socket = (MediaSocket *)args[2];
    if (parse_address(args[3], socket->family, &self->address, &self->address_size) < 0) {
        Destination_clear(self);
        return NULL;
    }
    Py_XSETREF(self->nominated, Py_NewRef(args[0]));
    Py_XSETREF(self->pair, Py_NewRef(args[1]));
    Py_XSETREF(self->socket, (MediaSocket *)Py_NewRef(socket));
    Py_RETURN_NONE;
}

static PyObject *
Destination_forget(Destination *self, PyObject *unused)
{
    Destination_clear(self);
    Py_RETURN_NONE;
}

static PyMethodDef Destination_methods[] = {
    {"point", (PyCFunction)(void (*)(void))Destination_point, METH_FASTCALL, Destination_point_doc},
    {"forget", (PyCFunction)Destination_forget, METH_NOARGS, "Lanes ask the sink again for every packet."},
    {NULL},
};

static PyTypeObject DestinationType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sfu._lane.Destination",
    .tp_doc = PyDoc_STR("Where a subscriber's packets go (socket and address), while its ICE pair holds."),
    .tp_basicsize = sizeof(Destination),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)Destination_dealloc,
    .tp_traverse = (traverseproc)Destination_traverse,
    .tp_clear = (inquiry)Destination_clear,
    .tp_methods = Destination_methods,
};

/* ---- the turn ------------------------------------------------------------------------ */

/* A lane's packet, protected for its leg: to the subscriber's socket, or through the sink. */
static void
send_from_lane(Reader *reader, Lane *lane, PyObject *packet)
{
    Destination *destination = (Destination *)lane->destination;
    if (destination != NULL && destination->socket != NULL && !destination->socket->closed) {
        PyObject *pair = PyDict_GetItemWithError(destination->nominated, one);
        if (pair != NULL && pair == destination->pair) {
            if (send_datagram(destination->socket, packet, &destination->address, destination->address_size) < 0)
                report(reader);
            return;
        }
        if (PyErr_Occurred()) {
            report(reader);
            return;
        }
    }
    PyObject *result = PyObject_CallMethodOneArg(lane->sink, str_resend, packet);
    if (result == NULL)
        report(reader);
    Py_XDECREF(result);
}

/* The RTP packet in the buffer, if its track has a lane: forward it. Returns 0 if it has none. */
static int
forward_through_lane(Reader *reader, Inbox *inbox, Py_ssize_t size)
{
    unsigned char *buffer = reader->view.buf;
    uint32_t ssrc = ((uint32_t)buffer[8] << 24) | ((uint32_t)buffer[9] << 16) | ((uint32_t)buffer[10] << 8) | buffer[11];
    LaneSlot *track = NULL;
    for (int i = 0; i < inbox->count; i++) {
        if (inbox->ssrcs[i] == ssrc) {
            track = (LaneSlot *)inbox->tracks[i];
            break;
        }
    }
    if (track == NULL || track->lane == NULL || !Py_IS_TYPE(track->lane, &LaneType))
        return 0;
    Lane *lane = (Lane *)Py_NewRef(track->lane);
    Py_INCREF(track);
    Py_INCREF(inbox);
    PyObject *result = lane_forward_buffer(lane, buffer, reader->view.len, size);
    if (result == NULL) {
        if (track->lane == (PyObject *)lane)
            Py_CLEAR(track->lane); /* the Python path takes over rather than fail on every packet */
        report(reader);
    } else if (result != Py_None) {
        inbox->packets_received += 1;
        if (PyBytes_CheckExact(result)) {
            send_from_lane(reader, lane, result);
        } else {
            /* Decrypted, but not the plain next packet: the Python path takes it. */
            PyObject *done = NULL;
            if (inbox->python_path != NULL)
                done = PyObject_CallFunctionObjArgs(inbox->python_path, (PyObject *)track, reader->buffer, result, NULL);
            if (done == NULL && PyErr_Occurred())
                report(reader);
            Py_XDECREF(done);
        }
    }
    Py_XDECREF(result);
    Py_DECREF(inbox);
    Py_DECREF(track);
    Py_DECREF(lane);
    return 1;
}

static void deliver(Reader *reader, MediaSocket *socket, Py_ssize_t size, const struct sockaddr_storage *sender);

/* Read one datagram and hand it on; 0 if there was none (or the socket failed). */
static int
read_one(Reader *reader, MediaSocket *socket)
{
    unsigned char *buffer = reader->view.buf;
    struct sockaddr_storage sender;
    socklen_t sender_size = sizeof(sender);
    ssize_t size;
    do {
        size = recvfrom(socket->fd, buffer, reader->view.len, 0, (struct sockaddr *)&sender, &sender_size);
    } while (size < 0 && errno == EINTR);
    if (size < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            socket_error(socket, errno);
        return 0;
    }
    if (size == 0 || size >= reader->view.len)
        return 1; /* cut short by the buffer: no WebRTC packet is this long */
    if (buffer[0] > 3 && socket->endpoints != NULL) {
        MediaSocket *endpoint = endpoint_for(socket, &sender);
        if (endpoint == NULL) {
            if (PyErr_Occurred())
                report(reader);
            else
                socket->strangers_dropped += 1; /* not STUN, and no endpoint's checked pair sent it */
            return 1;
        }
        if (!endpoint->closed)
            deliver(reader, endpoint, size, &sender);
        Py_DECREF(endpoint);
        return 1;
    }
    deliver(reader, socket, size, &sender);
    return 1;
}

/* A datagram of `size` bytes in the reader's buffer, read for `socket` from `sender`: to a lane or the transport. */
static void
deliver(Reader *reader, MediaSocket *socket, Py_ssize_t size, const struct sockaddr_storage *sender)
{
    unsigned char *buffer = reader->view.buf;
    if (buffer[0] > 3 && !is_checked_sender(socket, sender)) {
        socket->strangers_dropped += 1; /* not STUN, and from no checked ICE pair */
        return;
    }
    int media = buffer[0] > 127 && buffer[0] < 192; /* RFC 7983: RTP or RTCP */
    if (media && socket->inbox != NULL && size > 12 && !(buffer[1] > 191 && buffer[1] < 224) &&
        forward_through_lane(reader, (Inbox *)socket->inbox, size))
        return;
    if (socket->transport == NULL)
        return;
    /* Media of a peer goes to its handler, which does not need the sender's address. */
    PyObject *address = (media && socket->inbox != NULL) ? Py_NewRef(Py_None) : make_address(sender);
    PyObject *length = PyLong_FromSsize_t(size);
    PyObject *result = NULL;
    if (address != NULL && length != NULL)
        result = PyObject_CallMethodObjArgs(socket->transport, str_received, length, address, NULL);
    if (result == NULL)
        report(reader);
    Py_XDECREF(result);
    Py_XDECREF(length);
    Py_XDECREF(address);
}

static void
flush_pending(Reader *reader)
{
    PyObject *pending = reader->pending;
    reader->pending = PyList_New(0);
    if (reader->pending == NULL) {
        reader->pending = pending;
        report(reader);
        return;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pending); i++) {
        MediaSocket *socket = (MediaSocket *)PyList_GET_ITEM(pending, i);
        socket->pending = 0;
        flush(socket);
    }
    Py_DECREF(pending);
}

PyDoc_STRVAR(Reader_turn_doc,
"turn()\n--\n\n"
"Read every ready socket in rounds (at most `rounds` datagrams from one socket),\n"
"then send what was held back meanwhile. Returns False if no socket was ready.");

static PyObject *
Reader_turn(Reader *self, PyObject *unused)
{
    struct epoll_event events[MAX_EVENTS];
    MediaSocket *ready[MAX_EVENTS];
    if (self->epoll_fd < 0 || self->draining)
        Py_RETURN_FALSE;
    int count = epoll_wait(self->epoll_fd, events, MAX_EVENTS, 0);
    if (count <= 0)
        Py_RETURN_FALSE;
    self->draining = 1;
    for (int round = 0; round < self->rounds && count > 0; round++) {
        /* Python code run by a datagram may unregister a socket: hold each for the round. */
        for (int i = 0; i < count; i++)
            ready[i] = (MediaSocket *)Py_NewRef(events[i].data.ptr);
        for (int i = 0; i < count; i++) {
            /* A shared port reads, per round, a datagram for each sender it reads for. */
            Py_ssize_t reads = ready[i]->endpoints != NULL ? PyDict_GET_SIZE(ready[i]->endpoints) : 1;
            for (Py_ssize_t read = 0; read < (reads > 1 ? reads : 1) && !ready[i]->closed; read++) {
                if (!read_one(self, ready[i]))
                    break;
            }
        }
        for (int i = 0; i < count; i++)
            Py_DECREF(ready[i]);
        if (self->epoll_fd < 0)
            break;
        count = epoll_wait(self->epoll_fd, events, MAX_EVENTS, 0);
    }
    self->draining = 0;
    flush_pending(self);
    Py_RETURN_TRUE;
}

/* ---- Reader -------------------------------------------------------------------------- */

static int
Reader_init(Reader *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"datagrams", "rounds", "on_error", NULL};
    PyObject *buffer, *on_error;
    int rounds;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OiO", names, &buffer, &rounds, &on_error))
        return -1;
    if (rounds < 1 || self->sockets != NULL) {
        PyErr_SetString(PyExc_ValueError, "a Reader is set up once, with at least one round");
        return -1;
    }
    PyObject *writable = PyObject_GetAttrString(buffer, "writable");
    if (writable == NULL)
        return -1;
    int failed = PyObject_GetBuffer(writable, &self->view, PyBUF_WRITABLE);
    Py_DECREF(writable);
    if (failed < 0)
        return -1;
    self->buffer = Py_NewRef(buffer);
    self->sockets = PyDict_New();
    self->pending = PyList_New(0);
    if (self->sockets == NULL || self->pending == NULL)
        return -1;
    self->on_error = Py_NewRef(on_error);
    self->rounds = rounds;
    self->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (self->epoll_fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static PyObject *
Reader_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    Reader *self = (Reader *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->epoll_fd = -1;
    return (PyObject *)self;
}

static PyObject *
Reader_close(Reader *self, PyObject *unused)
{
    if (self->epoll_fd >= 0) {
        close(self->epoll_fd);
        self->epoll_fd = -1;
    }
    if (self->sockets != NULL) {
        Py_ssize_t position = 0;
        PyObject *key, *value;
        while (PyDict_Next(self->sockets, &position, &key, &value))
            socket_close((MediaSocket *)value);
        PyDict_Clear(self->sockets);
    }
    Py_RETURN_NONE;
}

static int
Reader_traverse(Reader *self, visitproc visit, void *arg)
{
    Py_VISIT(self->sockets);
    Py_VISIT(self->pending);
    Py_VISIT(self->buffer);
    Py_VISIT(self->on_error);
    return 0;
}

static int
Reader_clear(Reader *self)
{
    Py_CLEAR(self->sockets);
    Py_CLEAR(self->pending);
    Py_CLEAR(self->on_error);
    return 0;
}

static void
Reader_dealloc(Reader *self)
{
    PyObject_GC_UnTrack(self);
    if (self->epoll_fd >= 0)
        close(self->epoll_fd);
    Reader_clear(self);
    if (self->buffer != NULL)
        PyBuffer_Release(&self->view);
    Py_CLEAR(self->buffer);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static MediaSocket *
new_socket(Reader *reader, int fd, int family, PyObject *transport)
{
    MediaSocket *socket = PyObject_GC_New(MediaSocket, &MediaSocketType);
    if (socket == NULL)
        return NULL;
    socket->fd = fd;
    socket->family = family;
    socket->closed = 0;
    socket->pending = 0;
    socket->reader = (Reader *)Py_NewRef(reader);
    socket->transport = Py_NewRef(transport);
    socket->inbox = NULL;
    socket->outgoing = NULL;
    socket->queued = socket->capacity = 0;
    socket->sends_dropped = 0;
    socket->senders = 0;
    socket->strangers_dropped = 0;
    socket->endpoints = NULL;
    socket->port = NULL;
    PyObject_GC_Track(socket);
    return socket;
}

PyDoc_STRVAR(Reader_attach_doc,
"attach(port, transport)\n--\n\n"
"An endpoint of the shared port `port` (a MediaSocket of this reader) for `transport`:\n"
"it sends on the port's socket, and the port hands it the non-STUN datagrams of the\n"
"senders it permits. Unregister it as any socket.");

static PyObject *
Reader_attach(Reader *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyObject_TypeCheck(args[0], &MediaSocketType)) {
        PyErr_SetString(PyExc_TypeError, "attach(port: MediaSocket, transport)");
        return NULL;
    }
    MediaSocket *port = (MediaSocket *)args[0];
    if (port->closed || port->reader != self || port->port != NULL) {
        PyErr_SetString(PyExc_ValueError, "not an open socket of this reader");
        return NULL;
    }
    if (port->endpoints == NULL && (port->endpoints = PyDict_New()) == NULL)
        return NULL;
    MediaSocket *endpoint = new_socket(self, port->fd, port->family, args[1]);
    if (endpoint != NULL)
        endpoint->port = Py_NewRef(port);
    return (PyObject *)endpoint;
}

PyDoc_STRVAR(Reader_register_doc,
"register(fileno, family, transport)\n--\n\n"
"Read the socket `fileno` in every turn; return its MediaSocket. The transport gets\n"
"_received(size, address) for each datagram no lane takes and _socket_error(errno).");

static PyObject *
Reader_register(Reader *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "register(fileno, family, transport)");
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    long family = PyLong_AsLong(args[1]);
    if (PyErr_Occurred())
        return NULL;
    if (fd > INT_MAX || family < 0 || family > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "not a file descriptor or address family");
        return NULL;
    }
    if (self->epoll_fd < 0) {
        PyErr_SetString(PyExc_ValueError, "the reader is closed");
        return NULL;
    }
    if (fd < 0 || PyDict_Contains(self->sockets, args[0]) != 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "not a socket, or registered already");
        return NULL;
    }
    MediaSocket *socket = new_socket(self, (int)fd, (int)family, args[2]);
    if (socket == NULL)
        return NULL;
    struct epoll_event event = {.events = EPOLLIN, .data.ptr = socket};
    if (PyDict_SetItem(self->sockets, args[0], (PyObject *)socket) < 0) {
        Py_DECREF(socket);
        return NULL;
    }
    if (epoll_ctl(self->epoll_fd, EPOLL_CTL_ADD, (int)fd, &event) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        PyDict_DelItem(self->sockets, args[0]);
        socket_close(socket);
        Py_DECREF(socket);
        return NULL;
    }
    return (PyObject *)socket;
}

static PyObject *
Reader_unregister(Reader *self, PyObject *socket)
{
    if (!PyObject_TypeCheck(socket, &MediaSocketType)) {
        PyErr_SetString(PyExc_TypeError, "unregister(socket: MediaSocket)");
        return NULL;
    }
    MediaSocket *media = (MediaSocket *)socket;
    PyObject *key = PyLong_FromLong(media->fd);
    if (key == NULL)
        return NULL;
    if (self->sockets != NULL && PyDict_GetItemWithError(self->sockets, key) == socket) {
        if (self->epoll_fd >= 0)
            epoll_ctl(self->epoll_fd, EPOLL_CTL_DEL, media->fd, NULL);
        socket_close(media); /* before the dict lets go: the turn may still hold it */
        if (PyDict_DelItem(self->sockets, key) < 0) {
            Py_DECREF(key);
            return NULL;
        }
    }
    Py_DECREF(key);
    if (PyErr_Occurred())
        return NULL;
    socket_close(media);
    Py_RETURN_NONE;
}

static PyObject *
Reader_fileno(Reader *self, PyObject *unused)
{
    return PyLong_FromLong(self->epoll_fd);
}

static PyObject *
Reader_get_closed(Reader *self, void *closure)
{
    return PyBool_FromLong(self->epoll_fd < 0);
}

static PyObject *
Reader_get_draining(Reader *self, void *closure)
{
    return PyBool_FromLong(self->draining);
}

static PyMethodDef Reader_methods[] = {
    {"turn", (PyCFunction)Reader_turn, METH_NOARGS, Reader_turn_doc},
    {"register", (PyCFunction)(void (*)(void))Reader_register, METH_FASTCALL, Reader_register_doc},
    {"attach", (PyCFunction)(void (*)(void))Reader_attach, METH_FASTCALL, Reader_attach_doc},
    {"unregister", (PyCFunction)Reader_unregister, METH_O, "Stop reading a socket and close its MediaSocket."},
    {"fileno", (PyCFunction)Reader_fileno, METH_NOARGS, "The epoll's file descriptor, for the event loop to watch."},
    {"close", (PyCFunction)Reader_close, METH_NOARGS, "Close the epoll and let go of every socket."},
    {NULL},
};

static PyGetSetDef Reader_getset[] = {
    {"closed", (getter)Reader_get_closed, NULL, "Whether the epoll is closed.", NULL},
    {"draining", (getter)Reader_get_draining, NULL, "Whether a turn is being read (sends wait for its end).", NULL},
    {NULL},
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sfu._lane.Reader",
    .tp_doc = PyDoc_STR("One event loop's media sockets behind one epoll, read in turns (see sfu/media_socket.py)."),
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Reader_new,
    .tp_init = (initproc)Reader_init,
    .tp_dealloc = (destructor)Reader_dealloc,
    .tp_traverse = (traverseproc)Reader_traverse,
    .tp_clear = (inquiry)Reader_clear,
    .tp_methods = Reader_methods,
    .tp_getset = Reader_getset,
};

int
reader_add_types(PyObject *module)
{
    one = PyLong_FromLong(1);
    str_received = PyUnicode_InternFromString("_received");
    str_failed = PyUnicode_InternFromString("_socket_error");
    str_resend = PyUnicode_InternFromString("resend_rtp");
    if (one == NULL || str_received == NULL || str_failed == NULL || str_resend == NULL)
        return -1;
    if (PyType_Ready(&ReaderType) < 0 || PyType_Ready(&MediaSocketType) < 0 || PyType_Ready(&InboxType) < 0 ||
        PyType_Ready(&DestinationType) < 0)
        return -1;
    if (PyModule_AddObjectRef(module, "Reader", (PyObject *)&ReaderType) < 0 ||
        PyModule_AddObjectRef(module, "MediaSocket", (PyObject *)&MediaSocketType) < 0 ||
        PyModule_AddObjectRef(module, "Inbox", (PyObject *)&InboxType) < 0 ||
        PyModule_AddObjectRef(module, "Destination", (PyObject *)&DestinationType) < 0)
        return -1;
    return 0;
}
