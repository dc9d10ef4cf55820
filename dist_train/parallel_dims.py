"""The shape of the job's device mesh, validated from the config before any process group work (as torchtitan's
`ParallelDims`).

world size = replicate x shard x tensor:
- `tensor` (`parallel.tensor`): ranks that split each block (tensor parallelism); they read the same batch;
- `replicate` (`fsdp.replicate`): HSDP replica groups, gradients all-reduced across them;
- `shard`: the rest, the ranks FSDP2 shards over inside one replica group.
The data-parallel ranks are replicate x shard: the batch layout, the data order and the eval split are theirs.
Ranks are laid out tensor-innermost (rank = dp_rank x tensor + tp_rank), so a tensor-parallel group is made of
neighbouring ranks, i.e. of one node's GPUs when `tensor` divides the GPUs per node: TP's per-layer collectives
then stay on the node's fast links.
"""

from __future__ import annotations

from dataclasses import dataclass

from dist_train.errors import UsageError

MESH_DIMS = ("replicate", "shard", "tensor")


def divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


@dataclass(frozen=True)
class ParallelDims:
    replicate: int = 1
    shard: int = 1
    tensor: int = 1

    @classmethod
    def from_config(cls, config, world_size: int) -> ParallelDims:
        tensor, replicate = config.parallel.tensor, config.fsdp.replicate
        for key, value in (("parallel.tensor", tensor), ("fsdp.replicate", replicate)):
            if value > 1 and config.strategy != "fsdp":
                raise UsageError(f"{key}: {value} needs strategy=fsdp (a device mesh for FSDP2), got strategy="
                                 f"{config.strategy}; set strategy=fsdp or {key}=1")
        if world_size % tensor:
            raise UsageError(f"parallel.tensor: {tensor} does not divide the world size {world_size}; use one of "
                             f"{divisors(world_size)}")
        dp = world_size // tensor
        if dp % replicate:
            raise UsageError(f"fsdp.replicate: {replicate} does not divide the {dp} data-parallel ranks (world size "
                             f"{world_size} / parallel.tensor {tensor}); use one of {divisors(dp)}")
        return cls(replicate=replicate, shard=dp // replicate, tensor=tensor)

    @property
    def world_size(self) -> int:
        return self.replicate * self.shard * self.tensor

    @property
    def dp(self) -> int:
        """Data-parallel ranks: each reads its own share of the global batch."""
        return self.replicate * self.shard

    def dp_rank(self, rank: int) -> int:
        return rank // self.tensor

    def describe(self) -> str:
        parts = []
        if self.tensor > 1:
            parts.append(f"tensor parallel {self.tensor}")
        if self.replicate > 1:
            parts.append(f"HSDP {self.replicate} replicas x {self.shard} shards")
        elif self.shard > 1:
            parts.append(f"sharded over {self.shard} ranks")
        return " x ".join(parts)

    def build_mesh(self, device_type: str):
        """The 3-D mesh (replicate, shard, tensor); size-1 dimensions are kept so that slicing by name works for
        every shape."""
        from torch.distributed.device_mesh import init_device_mesh

        return init_device_mesh(device_type, (self.replicate, self.shard, self.tensor), mesh_dim_names=MESH_DIMS)

    @staticmethod
    def fsdp_mesh(mesh):
        """FSDP2's mesh: 2-D (replicate, shard) for HSDP, else the shard dimension alone."""
        return mesh["replicate", "shard"] if mesh["replicate"].size() > 1 else mesh["shard"]


def check_parallel(config, world_size: int) -> ParallelDims:
    """Everything about the mesh that the config alone decides, checked before any process group exists: the
    degrees against the world size and the strategy, and the recipe's ability to split its model."""
    dims = ParallelDims.from_config(config, world_size)
    if dims.tensor > 1:
        from dist_train.recipe import Recipe, resolve_recipe

        recipe_cls = resolve_recipe(config.recipe)
        if recipe_cls.tp_plan is Recipe.tp_plan:
            raise UsageError(f"parallel.tensor: {dims.tensor} needs a tensor-parallel plan, and recipe "
                             f"{config.recipe} has none (Recipe.tp_plan); use parallel.tensor=1 (FSDP or HSDP "
                             "shard any model)")
        recipe_cls(config).check_parallel(dims.tensor)
    return dims
