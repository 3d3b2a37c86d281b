"""EC2 test bed for the EBS CSI driver: moto's EC2 in-process plus what real EC2 adds.

moto (pinned in requirements.txt) implements the EC2 calls the driver makes but
answers like an idealised cloud: no delays, no idempotency, no attach checks, no
throttling. This package wraps moto's EC2 Flask app in a WSGI front that adds
those behaviours (see README.md), serves IMDSv2 for one local instance, and
turns attachments to that instance into real loop devices.

Module map (each file says why it exists):
  server.py    - command line, WSGI front, process lifecycle and cleanup
  sim.py       - shared state: the moto backend lock, scheduler, local instance
  patches.py   - installs the realism layer onto moto's classes
  volumes.py   - CreateVolume / CopyVolumes / DeleteVolume / ModifyVolume realism
  attach.py    - AttachVolume / DetachVolume checks and state machine
  snapshots.py - snapshot states, snapshot bytes, DescribeSnapshots paging
  fsr.py       - Enable/Describe/DisableFastSnapshotRestores (moto has none)
  paging.py    - MaxResults / NextToken the way EC2 does it
  states.py    - delay profiles and the due-event scheduler
  events.py    - the transition log behind /_sim/events
  throttle.py  - per-action-class token buckets
  faults.py    - fault injection SPEC parsing and decisions
  counters.py  - per-action call / throttle / fault counters
  devices.py   - sparse files, loop devices, by-id style links
  imds.py      - IMDSv2 responder for the local instance
  control.py   - /_sim/ control endpoints for tests
  wire.py      - EC2 error XML and request ids
"""
