"""Model-shaped parameter sets for the benchmarks, built from torch.nn layers only."""
from torch import nn


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = 4 * width
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                         nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)


def resnet50_shaped() -> nn.Module:
    """ResNet-50's parameters (25.6M in 161 tensors: conv weights, BatchNorm affine, fc)."""
    model = nn.Module()
    model.conv1, model.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
    cin, stages = 64, []
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        layer = []
        for i in range(blocks):
            layer.append(Bottleneck(cin, width, stride if i == 0 else 1))
            cin = 4 * width
        stages.append(nn.Sequential(*layer))
    model.layer1, model.layer2, model.layer3, model.layer4 = stages
    model.fc = nn.Linear(2048, 1000)
    return model
